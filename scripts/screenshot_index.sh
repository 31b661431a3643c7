#!/usr/bin/env bash
# Screenshot a results folder's index.html in headless Chromium (a manual
# check of the report page; CI does not run it).
#   scripts/screenshot_index.sh [results/demo] [out.png] [WIDTHxHEIGHT]
# Needs Chromium (Debian: apt-get install -y chromium).
set -euo pipefail
dir=${1:-results/demo}
out=${2:-index.png}
size=${3:-1400,1800}
page=$(realpath "$dir/index.html")
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
chromium --headless --no-sandbox --disable-gpu --disable-background-networking \
  --disable-component-update --disable-sync --no-first-run --hide-scrollbars \
  --user-data-dir="$profile" --window-size="${size/x/,}" --screenshot="$(realpath -m "$out")" \
  "file://$page" 2>/dev/null
echo "wrote $out"
