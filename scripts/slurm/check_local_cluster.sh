#!/bin/bash
# A real Slurm check of sharded sweeps (issue 10): installs Debian's slurm-wlm
# and munge, starts a throwaway single-node cluster on this machine (munged,
# slurmctld, slurmd on $(hostname)), submits configs/sweep.toml with
# submit.sh as N array tasks per round (default 3) and checks that every job
# COMPLETED and that the merged results are byte-identical to a
# single-process `bench run` of the same config.
#
#   scripts/slurm/check_local_cluster.sh [N]      (as root; re-runnable)
#
# Needs root (apt-get, daemons run as root: SlurmUser=root). No cgroups:
# proctrack/linuxproc, task/none, no accounting. Everything the cluster
# writes (slurm.conf, state, spool, logs) lives in $SLURM_DIR, the runs in
# $WORK; /etc/slurm is left alone (we point SLURM_CONF at our slurm.conf).
# The daemons are stopped on exit. Exit status 0 = PASS.
set -euo pipefail
N=${1:-3}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
BENCH=${BENCH:-$ROOT/target/release/bench}
CONFIG=${CONFIG:-configs/sweep.toml}
SLURM_DIR=${SLURM_DIR:-/tmp/bench-slurm}   # cluster: conf, state, logs
WORK=${WORK:-/tmp/bench-slurm-check}       # runs: configs, outputs, job logs
TIMEOUT=${TIMEOUT:-900}                    # seconds to wait for the jobs
t0=$(date +%s)
say() { echo "[$(( $(date +%s) - t0 ))s] $*"; }
die() { echo "FAIL: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (installs packages, starts daemons)"
[ -x "$BENCH" ] || die "$BENCH: no bench binary (cargo build --release)"

# --- 1. packages --------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
  || ! command -v munged >/dev/null; then
  say "installing slurm-wlm and munge"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge
fi
say "$(slurmctld -V), munge $(munged -V 2>&1 | awk '{print $2; exit}')"

# --- 2. stop what an earlier (killed) run of this script left running ---
stop_pidfile() {   # stop the daemon whose pid file is $1, if it is ours
  local pid
  [ -f "$1" ] || return 0
  pid=$(cat "$1" 2>/dev/null || true)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$1"
}
if [ -f "$SLURM_DIR/slurmctld.pid" ] && kill -0 "$(cat "$SLURM_DIR/slurmctld.pid")" 2>/dev/null; then
  say "stopping the cluster of an earlier run"
  SLURM_CONF=$SLURM_DIR/slurm.conf scancel --user=root 2>/dev/null || true
  sleep 2   # let slurmd end the jobs' steps
fi
stop_pidfile "$SLURM_DIR/slurmd.pid"
stop_pidfile "$SLURM_DIR/slurmctld.pid"
stop_pidfile "$SLURM_DIR/munged.pid"
rm -rf "$SLURM_DIR" "$WORK"
mkdir -p "$SLURM_DIR/state" "$SLURM_DIR/spool" "$WORK"
# Every job of a sharded run must use the same binary (shard states record
# the tool's version and git revision): take a copy, so that a rebuild
# during the check cannot break it.
cp "$BENCH" "$WORK/bench"
export BENCH=$WORK/bench

# --- 3. munge -----------------------------------------------------------
# The Debian package creates /etc/munge/munge.key; make one if it is missing.
if [ ! -s /etc/munge/munge.key ]; then
  say "creating /etc/munge/munge.key"
  mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null \
    || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
started_munged=
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  say "starting munged"
  runuser -u munge -- munged
  for _ in $(seq 50); do [ -f /run/munge/munged.pid ] && break; sleep 0.1; done
  cp /run/munge/munged.pid "$SLURM_DIR/munged.pid"   # ours: stop it on exit
  started_munged=1
fi
munge -n | unmunge >/dev/null || die "munge does not work (see /var/log/munge/munged.log)"

# --- 4. slurm.conf --------------------------------------------------------
HOST=$(hostname)
# slurmctld and slurmd must resolve the host name.
getent hosts "$HOST" >/dev/null || echo "127.0.0.1 $HOST" >>/etc/hosts
# This machine as slurmd sees it: CPUs, sockets, cores, threads, RealMemory.
NODE=$(slurmd -C | head -n 1)
case $NODE in NodeName=*) ;; *) die "slurmd -C: unexpected output: $NODE" ;; esac
export SLURM_CONF=$SLURM_DIR/slurm.conf
cat >"$SLURM_CONF" <<EOF
# Throwaway single-node cluster of scripts/slurm/check_local_cluster.sh.
ClusterName=benchcheck
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$SLURM_DIR/state
SlurmdSpoolDir=$SLURM_DIR/spool
SlurmctldPidFile=$SLURM_DIR/slurmctld.pid
SlurmdPidFile=$SLURM_DIR/slurmd.pid
SlurmctldLogFile=$SLURM_DIR/slurmctld.log
SlurmdLogFile=$SLURM_DIR/slurmd.log
# No cgroups (containers rarely delegate cgroup v2), no accounting.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
# Keep finished jobs visible to scontrol for the final check.
MinJobAge=3600
$NODE State=UNKNOWN
PartitionName=check Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF

# --- 5. daemons -----------------------------------------------------------
cleanup() {
  stop_pidfile "$SLURM_DIR/slurmd.pid"
  stop_pidfile "$SLURM_DIR/slurmctld.pid"
  [ -z "$started_munged" ] || stop_pidfile "$SLURM_DIR/munged.pid"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
say "starting slurmctld and slurmd on $HOST ($NODE)"
slurmctld -c   # -c: cold start, no saved state
slurmd
idle=
for _ in $(seq 60); do
  state=$(sinfo -h -N -n "$HOST" -o %T 2>/dev/null || true)
  [ "$state" = idle ] && { idle=1; break; }
  sleep 1
done
[ -n "$idle" ] || {
  tail -n 20 "$SLURM_DIR"/slurm*.log >&2 || true
  die "node $HOST not idle after 60 s (state: ${state:-none}); logs in $SLURM_DIR"
}
say "sinfo: $(sinfo -h -o '%P %a %D %T %N')"

# --- 6. configs: the sweep written to two output folders ----------------
cfg() {   # cfg OUT FILE: $CONFIG with output = "OUT" after its name line
  awk -v out="$1" '{ print } !done && /^name[[:space:]]*=/ { print "output = \"" out "\""; done = 1 }' \
    "$CONFIG" >"$2"
  grep -q "^output = \"$1\"" "$2" || die "$CONFIG: no top-level name line"
}
cfg "$WORK/sharded" "$WORK/sharded.toml"
cfg "$WORK/single" "$WORK/single.toml"
NAME=$(awk '/^[[:space:]]*\[/ { exit } /^name[[:space:]]*=/ { sub(/^[^"]*"/, ""); sub(/".*/, ""); print; exit }' "$CONFIG")

# --- 7. submit and wait -------------------------------------------------------
say "submit.sh $WORK/sharded.toml $N"
LOGDIR=$WORK/logs "$ROOT/scripts/slurm/submit.sh" "$WORK/sharded.toml" "$N" | tee "$WORK/submit.out"
jobs=$(awk '/^round/ { print $4; print $6 }' "$WORK/submit.out" | paste -sd, -)
[ -n "$jobs" ] || die "submit.sh printed no job ids"
say "waiting for jobs $jobs"
while [ -n "$(squeue -h -j "$jobs" -o %i 2>/dev/null)" ]; do
  [ $(( $(date +%s) - t0 )) -lt "$TIMEOUT" ] || { squeue; die "jobs still queued after ${TIMEOUT}s"; }
  sleep 2
done

# The single-process reference, while the jobs' outputs are checked.
say "single-process run: bench run $WORK/single.toml"
"$BENCH" run --no-shard "$WORK/single.toml" >"$WORK/single.log" 2>&1 \
  || { cat "$WORK/single.log" >&2; die "single-process bench run failed"; }

# --- 8. verdict ---------------------------------------------------------------
fail=0
echo "== jobs (scontrol show job)"
for j in ${jobs//,/ }; do
  # One line per job or array task: id, name, state, exit code.
  scontrol -o show job "$j" | awk '{
    delete f; for (i = 1; i <= NF; i++) { k = $i; sub(/=.*/, "", k); v = $i; sub(/^[^=]*=/, "", v); f[k] = v }
    id = ("ArrayTaskId" in f) ? f["ArrayJobId"] "_" f["ArrayTaskId"] : f["JobId"]
    printf "%-8s %-12s %-10s exit %s\n", id, f["JobName"], f["JobState"], f["ExitCode"] }' | sort -t_ -k2n
done | tee "$WORK/jobs.txt"
tasks=$(grep -c '^round' "$WORK/submit.out")   # rounds
[ "$(grep -c . "$WORK/jobs.txt")" -eq $(( tasks * (N + 1) )) ] \
  || { echo "FAIL: expected $((tasks * (N + 1))) jobs/tasks"; fail=1; }
if awk '$3 != "COMPLETED" || $5 != "0:0" { bad = 1 } END { exit !bad }' "$WORK/jobs.txt"; then
  echo "FAIL: not every job COMPLETED with exit 0:0 (logs: $WORK/logs)"; fail=1
fi

echo "== sharded ($WORK/sharded/$NAME) vs single-process ($WORK/single/$NAME)"
for f in results.json tables.md drift.json calibration.json; do
  if cmp "$WORK/sharded/$NAME/$f" "$WORK/single/$NAME/$f"; then
    echo "cmp $f: identical"
  else
    echo "FAIL: $f differs or is missing"; fail=1
  fi
done
for d in curves plots; do
  if [ -d "$WORK/single/$NAME/$d" ] && diff -r "$WORK/sharded/$NAME/$d" "$WORK/single/$NAME/$d" >/dev/null; then
    echo "diff -r $d/: identical ($(find "$WORK/single/$NAME/$d" -type f | wc -l) files)"
  else
    echo "FAIL: $d/ differs or is missing"; fail=1
  fi
done
[ ! -e "$WORK/sharded/$NAME/shards" ] || { echo "FAIL: shards/ left behind"; fail=1; }
# For information: the committed results of the same config.
if [ -d "results/$NAME" ]; then
  for f in results.json tables.md drift.json; do
    cmp -s "$WORK/sharded/$NAME/$f" "results/$NAME/$f" \
      && echo "note: $f identical to committed results/$NAME/$f" \
      || echo "note: $f differs from committed results/$NAME/$f (stale?)"
  done
fi

echo "== wall time $(( $(date +%s) - t0 ))s, $N shards x $tasks rounds"
if [ "$fail" = 0 ]; then echo "PASS"; else echo "FAIL (cluster logs: $SLURM_DIR, job logs: $WORK/logs)"; exit 1; fi
