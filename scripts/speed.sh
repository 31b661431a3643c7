#!/usr/bin/env bash
# Sweep speed against reading the logits (issue 16): a StreetHazards-like
# synthetic case (512×512, 13 classes, float16 logits; calibration 10 /
# val 10 / test 60 images; max_logit msp energy sml heat) timed with
# `bench run --device $DEVICE` (default cpu) against `cat` of every logits
# file the sweep reads (page cache warm for both: cat runs first, twice).
# Writes ~0.6 GB under $SPEED_DIR (default /tmp/bench-speed).
#
#   bash scripts/speed.sh                 # this tree's release binary
#   BENCH=/path/to/old/bench bash scripts/speed.sh   # another binary
#   CLASSES=19 DTYPE=f32 H=1024 W=2048 bash scripts/speed.sh   # Cityscapes-sized
#   DRIFTED=lighting=0.85 bash scripts/speed.sh   # with a drifted test copy (default none)
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH=${BENCH:-target/release/bench}
DIR=${SPEED_DIR:-/tmp/bench-speed}
DEVICE=${DEVICE:-cpu}
CLASSES=${CLASSES:-13}
DTYPE=${DTYPE:-f16}
H=${H:-512}
W=${W:-512}
SPLITS=${SPLITS:-calibration=10,val=10,test=60}
METHODS=${METHODS:-'"max_logit", "msp", "energy", "sml", "heat"'}
[ "$BENCH" != target/release/bench ] || cargo build --release -q
tag="${H}x${W}_c${CLASSES}_${DTYPE}_${SPLITS//[=,]/_}"
ds="$DIR/$tag"
mkdir -p "$DIR"
[ -d "$ds" ] || "$BENCH" synth --out "$ds" --splits "$SPLITS" \
    --models "m:$DTYPE:0.6" --height "$H" --width "$W" --classes "$CLASSES" --drifted "${DRIFTED:-none}" 2>/dev/null
cat > "$DIR/$tag.toml" <<TOML
name = "speed_$tag"
dataset = "$ds"
output = "$DIR/results"
methods = [$METHODS]
device = "$DEVICE"
[[models]]
id = "m"
name = "synthetic $DTYPE"
TOML
files=("$ds"/*/logits/m/*)
cat "${files[@]}" > /dev/null
t0=$(date +%s.%N); cat "${files[@]}" > /dev/null; t1=$(date +%s.%N)
cat_s=$(echo "$t1 - $t0" | bc)
/usr/bin/time -f "%e %M %U %S" -o "$DIR/time.txt" "$BENCH" run "$DIR/$tag.toml" --device "$DEVICE" >/dev/null 2>"$DIR/$tag.log" \
  || { cat "$DIR/$tag.log"; exit 1; }
read -r wall rss usr sys < "$DIR/time.txt"
bytes=$(du -cb "${files[@]}" | tail -1 | cut -f1)
printf 'case %s, %s, %d logits files, %d MB\n' "$tag" "$DEVICE" "${#files[@]}" "$((bytes / 1000000))"
printf 'bench run %s s wall, %s s CPU (peak RSS %d MB); cat %s s; ratio %.1fx\n' "$wall" "$(echo "$usr + $sys" | bc)" "$((rss / 1024))" "$cat_s" "$(echo "$wall / $cat_s" | bc -l)"
