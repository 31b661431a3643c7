#!/usr/bin/env bash
# Scale benchmark (issue 5): StreetHazards-sized synthetic splits
# (512×512, 13 classes, float16 logits, all five methods) at several test
# sizes; reports wall time and peak RSS of `bench run`, and the time of a
# plain read of the same logits files (`cat > /dev/null`) for comparison.
# Not part of CI: it writes ~14 GB under $SCALE_DIR (default /tmp/bench-scale).
#
#   bash scripts/scale.sh [N ...]        # default: 100 500 1500
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH=${BENCH:-target/release/bench}
DIR=${SCALE_DIR:-/tmp/bench-scale}
DEVICE=${DEVICE:-cpu}
SIZES=("$@"); [ ${#SIZES[@]} -gt 0 ] || SIZES=(100 500 1500)
cargo build --release -q
mkdir -p "$DIR"
printf '%-6s %-10s %-12s %-12s %-10s\n' images pixels run_s peak_rss_MB cat_s
for n in "${SIZES[@]}"; do
  ds="$DIR/scale_$n"
  [ -d "$ds" ] || "$BENCH" synth --out "$ds" --splits "calibration=20,val=20,test=$n" \
      --models "segformer_b5:f16:0.6" --height 512 --width 512 --classes 13 2>/dev/null
  cat > "$DIR/scale_$n.toml" <<TOML
name = "scale_$n"
dataset = "$ds"
output = "$DIR/results"
methods = ["max_logit", "msp", "sml", "energy", "heat"]
device = "$DEVICE"
[[models]]
id = "segformer_b5"
name = "SegFormer-B5 (synthetic, f16)"
TOML
  # plain read of the test logits (what the sweep cannot beat)
  t0=$(date +%s.%N); cat "$ds"/test/logits/segformer_b5/*.npy > /dev/null; t1=$(date +%s.%N)
  cat_s=$(echo "$t1 - $t0" | bc)
  /usr/bin/time -f "%e %M" -o "$DIR/time.txt" "$BENCH" run "$DIR/scale_$n.toml" >/dev/null 2>"$DIR/scale_$n.log"
  read -r wall rss < "$DIR/time.txt"
  printf '%-6s %-10s %-12s %-12s %-10s\n' "$n" "$((n*512*512))" "$wall" "$((rss/1024))" "$cat_s"
done
