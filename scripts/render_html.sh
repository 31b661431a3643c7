#!/usr/bin/env bash
# Render results/<name>/index.html in headless Chromium and save a PNG, to
# look at what a reviewer sees (Debian: apt-get install chromium).
#   bash scripts/render_html.sh [results/demo] [out.png]
set -euo pipefail
dir=${1:-results/demo}; out=${2:-/tmp/bench-index.png}
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$(mktemp -d)" --window-size=1300,2400 \
  --screenshot="$out" "file://$(realpath "$dir")/index.html" 2>/dev/null
[ -s "$out" ] && echo "wrote $out"
