#!/usr/bin/env bash
# CI for the Python package: build and install ./python (maturin, PEP 517),
# then run its pytest suite. Needs a Rust toolchain and Python >= 3.9 with
# pip; network only for PyPI (maturin, numpy, pytest, scikit-learn) and
# crates.io (pyo3, numpy crates). Called by .ci/run after `cargo test --release`.
#
#   python/ci.sh            # from anywhere
#   PYTHON=python3.12 python/ci.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}

# Reuse the top-level build: the `bench` crate and the dependencies whose
# features agree are not compiled twice (the extension adds ~2 min on 2 cores
# instead of a full wgpu build).
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

# A virtual environment that still sees system packages (no PEP 668 trouble
# on Debian, and preinstalled numpy / scikit-learn are reused).
VENV=${ANOSEG_CI_VENV:-$CARGO_TARGET_DIR/py-ci-venv}
if [ -x "$VENV/bin/python" ] || "$PY" -m venv --system-site-packages "$VENV" 2>/dev/null; then
    VPY=$VENV/bin/python
else
    # no venv module (Debian without python3-venv): the system interpreter
    echo "python/ci.sh: notice: '$PY -m venv' unavailable; installing into $PY's site-packages" >&2
    rm -rf "$VENV"
    VPY=$PY
    export PIP_BREAK_SYSTEM_PACKAGES=1
fi
"$VPY" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
"$VPY" -m pip install -q "$ROOT/python[test]"

# The CLI the comparison tests run (a no-op after `cargo test --release`).
cargo build --release --bin bench -q
export BENCH_BIN=$CARGO_TARGET_DIR/release/bench

# Not from python/: its anoseg_bench/ source folder (no compiled module)
# would shadow the installed package.
cd "$ROOT"
"$VPY" -m pytest -q -p no:cacheprovider python/tests
