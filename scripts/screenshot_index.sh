#!/usr/bin/env bash
# Screenshot a results folder's page in headless Chromium (a manual look at
# what a reviewer sees; tests/report_chromium.rs is the automated check).
#   scripts/screenshot_index.sh [results/demo] [out.png] [WIDTHxHEIGHT] [index.html|report.html]
#   e.g. scripts/screenshot_index.sh results/demo docs/report_demo.png 1280x5800 report.html
# Needs Chromium (Debian: apt-get install -y chromium).
set -euo pipefail
dir=${1:-results/demo}
out=${2:-index.png}
size=${3:-1400,1800}
page=$(realpath "$dir/${4:-index.html}")
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
chromium --headless --no-sandbox --disable-gpu --disable-background-networking \
  --disable-component-update --disable-sync --no-first-run --hide-scrollbars \
  --disable-dev-shm-usage --force-color-profile=srgb \
  --user-data-dir="$profile" --window-size="${size/x/,}" --screenshot="$(realpath -m "$out")" \
  "file://$page" 2>/dev/null
echo "wrote $out"
