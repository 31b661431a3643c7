#!/bin/bash
# Submit a sharded `bench` sweep to Slurm: R rounds (R = `bench run <config>
# --rounds`), each an array of N shard tasks followed by one merge job,
# chained with --dependency=afterok. Run it from the project root: jobs cd to
# the submit directory, which is where the config's relative paths point.
#
#   scripts/slurm/submit.sh <config> <N> [extra sbatch args...]
#
# Extra args (partition, account, --time, --gres=gpu:1, ...) go to every job.
# BENCH (the binary, default target/release/bench) is exported to the jobs;
# LOGDIR (default slurm-logs) receives the jobs' output files.
# Prints the job ids: one line per round, "round r/R: array <id> merge <id>".
set -euo pipefail
usage() { echo "usage: $0 <config> <N> [extra sbatch args...]" >&2; exit 2; }
[ $# -ge 2 ] || usage
config=$1 n=$2; shift 2
case $n in '' | *[!0-9]* | 0) usage ;; esac
[ -f "$config" ] || { echo "$0: $config: no such file" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
export BENCH=${BENCH:-target/release/bench}
logdir=${LOGDIR:-slurm-logs}

# Top-level `key = "value"` of the config (before the first [table]).
top() { awk -v k="$1" '/^[[:space:]]*\[/ { exit }
  $0 ~ "^[[:space:]]*" k "[[:space:]]*=" { sub(/^[^=]*=[[:space:]]*"/, ""); sub(/".*/, ""); print; exit }' "$config"; }
name=$(top name)
[ -n "$name" ] || { echo "$0: $config: no top-level name = \"...\"" >&2; exit 2; }
output=$(top output)
results=${output:-results}/$name

rounds=$("$BENCH" run "$config" --rounds)
# A leftover shards/ folder is an unfinished (or failed) sharded run: R more
# rounds on top of it would overshoot. Remove it to start over.
if [ -e "$results/shards" ]; then
  echo "$0: $results/shards exists (an unfinished sharded run); remove it to start over" >&2
  exit 1
fi
mkdir -p "$logdir"

dep=()   # round r's array waits for round r-1's merge
for r in $(seq 1 "$rounds"); do
  array=$(sbatch --parsable ${dep[@]+"${dep[@]}"} --array=0-$((n - 1)) \
    --output="$logdir/%x-%A_%a.out" "$@" "$here/bench-shard.sbatch" "$config")
  array=${array%%;*}   # --parsable prints "id[;cluster]"
  merge=$(sbatch --parsable --dependency=afterok:"$array" --kill-on-invalid-dep=yes \
    --output="$logdir/%x-%j.out" "$@" "$here/bench-merge.sbatch" "$results")
  merge=${merge%%;*}
  echo "round $r/$rounds: array $array merge $merge"
  # A failed job cancels the rest of the chain instead of leaving it pending.
  dep=(--dependency=afterok:"$merge" --kill-on-invalid-dep=yes)
done
echo "results: $results (after job $merge)"
