#!/usr/bin/env bash
# One prepared check of the GPU path on a machine with a real GPU (issue 16).
# Runs from the repository root of a copy of the working tree, with no
# network and no Rust toolchain: everything it runs is built elsewhere and
# carried over.
#
# Prepare (on the build machine, once):
#   cargo build --release --bin bench
#   cargo test --release --no-run --test gpu_parity --test gpu_rank   # the parity test binaries
#   cargo bench --no-run --bench scores                  # the criterion binary
#   mkdir -p .carry && cp target/release/bench .carry/ \
#     && cp "$(ls -t target/release/deps/gpu_parity-* | grep -v '\.d$' | head -1)" .carry/gpu_parity \
#     && cp "$(ls -t target/release/deps/gpu_rank-* | grep -v '\.d$' | head -1)" .carry/gpu_rank \
#     && cp "$(ls -t target/release/deps/scores-* | grep -v '\.d$' | head -1)" .carry/scores_bench
#   # Vulkan loader from Debian (the device README's recipe):
#   echo /.gl/ >>.git/info/exclude; mkdir -p .gl /tmp/amd64/partial
#   o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
#   apt-get $o update; (cd .gl && apt-get $o download libvulkan1)
#
# Run (device machine; carry .carry and .gl):
#   bash scripts/device_check.sh            # < 5 minutes; prints everything, copies it to $OUT
#
# Prints: `bench devices`; the GPU parity tests on the real adapter; a
# StreetHazards-like sweep (512², 13 classes, f16; calibration 10 / val 10 /
# test 60) and a Cityscapes-sized one (1024×2048, 19 classes, f32; 2 / 2 / 8)
# on --device gpu and --device cpu against `cat` of the same logits; and
# criterion's scores bench in quick mode (fused pass vs a buffer copy).
set -uo pipefail
cd "$(dirname "$0")/.."
C=${CARRY:-.carry}
BENCH=${BENCH:-$C/bench}
OUTDIR=${OUT:-/tmp/device_check}
mkdir -p "$OUTDIR"
LOG="$OUTDIR/device_check.txt"
exec > >(tee "$LOG") 2>&1
t_start=$(date +%s)
say() { printf '\n== %s\n' "$*"; }

# Vulkan loader: unpack carried Debian packages when the machine has none.
if ! ldconfig -p 2>/dev/null | grep -q libvulkan.so.1 && ls .gl/*.deb >/dev/null 2>&1; then
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
fi
if [ -z "${VK_DRIVER_FILES:-}" ] && [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
    export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
fi
[ -x "$BENCH" ] || { echo "device_check: $BENCH missing (see the header of this script)"; exit 2; }

say "machine"
uname -a; nproc; free -g | head -2; nvidia-smi -L 2>/dev/null || echo "(no nvidia-smi)"
say "bench devices"
"$BENCH" devices

say "GPU parity tests on the real adapter (BENCH_REQUIRE_GPU=1)"
for t in gpu_parity gpu_rank; do
    if [ -x "$C/$t" ]; then
        NODEVICE_SELECT=1 BENCH_REQUIRE_GPU=1 timeout 120 "$C/$t" --test-threads 1 2>&1 | grep -E '^test |test result' || echo "$t: FAILED"
    else
        echo "(no $C/$t carried)"
    fi
done

# sweep NAME H W C FORMAT SPLITS: synth, then time cat / gpu / cpu.
sweep() {
    local name=$1 h=$2 w=$3 c=$4 fmt=$5 splits=$6 d="/tmp/dc_$1"
    say "sweep $name: ${h}x${w}, C=$c, $fmt, splits $splits"
    rm -rf "$d"; mkdir -p "$d"
    "$BENCH" synth --out "$d/ds" --splits "$splits" --height "$h" --width "$w" --classes "$c" --models "m:$fmt:0.8" >/dev/null 2>&1 \
        || { echo "synth failed"; return; }
    cat > "$d/c.toml" <<EOF
name = "dc"
dataset = "$d/ds"
output = "$d/results"
methods = ["max_logit", "msp", "sml", "energy", "heat"]
[[models]]
id = "m"
name = "M"
EOF
    local bytes; bytes=$(find "$d/ds" -path '*logits*' -name '*.npy' -printf '%s\n' | awk '{s+=$1} END {print s}')
    find "$d/ds" -path '*logits*' -name '*.npy' -exec cat {} + > /dev/null   # warm the page cache
    local t0 t1
    t0=$(date +%s.%N); find "$d/ds" -path '*logits*' -name '*.npy' -exec cat {} + > /dev/null; t1=$(date +%s.%N)
    local tcat; tcat=$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')
    echo "logits: $((bytes / 1048576)) MiB; cat (warm): ${tcat} s"
    for dev in gpu cpu; do
        rm -rf "$d/results"
        t0=$(date +%s.%N)
        if CI=true timeout 200 "$BENCH" run "$d/c.toml" --device "$dev" -v > "$d/$dev.stdout" 2> "$d/$dev.stderr"; then
            t1=$(date +%s.%N)
            local tr; tr=$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')
            printf 'bench run --device %s: %.2f s = %.1f x cat; %s\n' "$dev" "$tr" "$(awk -v a="$tr" -v b="$tcat" 'BEGIN {print a / b}')" "$(grep -m1 '^device' "$d/$dev.stderr" || echo cpu)"
            grep -E '^\[m\] calibrate [0-9]' "$d/$dev.stderr" || true   # phases (rank: "on the GPU" = device ranking)
            cp "$d/results/dc/results.json" "$d/$dev.results.json"
        else
            echo "bench run --device $dev FAILED:"; tail -3 "$d/$dev.stderr"
        fi
    done
    if [ -f "$d/gpu.results.json" ] && [ -f "$d/cpu.results.json" ]; then
        mkdir -p "$d/a" "$d/b"; cp "$d/gpu.results.json" "$d/a/results.json"; cp "$d/cpu.results.json" "$d/b/results.json"
        "$BENCH" diff "$d/b" "$d/a" --tol 1e-6 | tail -2
    fi
}
if [ -n "${DC_QUICK:-}" ]; then   # a smoke test of this script (e.g. on lavapipe)
    sweep streethazards 64 64 13 f16 calibration=2,val=2,test=4
else
    sweep streethazards 512 512 13 f16 calibration=10,val=10,test=60
    sweep cityscapes 1024 2048 19 f32 calibration=2,val=2,test=8
fi

say "criterion scores bench (quick)"
if [ -x "$C/scores_bench" ]; then
    timeout 150 "$C/scores_bench" --bench --quick 2>&1 | grep -E '^[a-z0-9_/]+ .*time:|thrpt:|^gpu|^copy' | head -60
else
    echo "(no $C/scores_bench carried)"
fi
say "done in $(( $(date +%s) - t_start )) s; log: $LOG"
