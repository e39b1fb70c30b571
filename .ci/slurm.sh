#!/usr/bin/env bash
# A single-node Slurm cluster on localhost, for tests/test_slurm.py (run as root).
#
#   bash .ci/slurm.sh          install slurm-wlm + munge, write the config, start the
#                              daemons, wait until the node is idle; exits 0 when
#                              `sbatch` works. Safe to run again: a cluster that is up
#                              on the same config is left as it is (running jobs too).
#
# No systemd is needed (containers rarely run it): the daemons are started directly.
# The node is this machine, declared at least the size of a small GPU node (8 CPUs,
# 32 GiB, one GPU) so that profiles/slurm is scheduled exactly as written:
# SlurmdParameters=config_overrides makes Slurm trust the declared size, and the GPU is
# a GRES slot backed by /dev/null. Nothing is enforced (no cgroups, no CPU binding), so
# the jobs simply run on the real cores; torch finds no CUDA and runs on the CPU.
# The tests keep this harmless: at most 2 jobs at once (profiles/slurm-localhost),
# FCA_THREADS=1. There is no accounting database (slurmdbd/MySQL): the
# Snakemake plugin polls job states with `squeue` (profiles/slurm-localhost sets
# status_command: squeue), which answers for finished jobs until MinJobAge has passed.
# Finished jobs are also listed in /var/log/slurm/jobcomp.log (jobcomp/filetxt).
#
# Logs: /var/log/slurm/slurmctld.log, /var/log/slurm/slurmd.log, /var/log/munge/munged.log
set -euo pipefail

CONF_DIR=/etc/slurm
LOG_DIR=/var/log/slurm
JOBCOMP=$LOG_DIR/jobcomp.log
START=$(date +%s)

log() { echo "slurm.sh: $*" >&2; }

node_state() {  # idle, mixed, allocated, ... (empty when slurmctld does not answer)
  command -v sinfo >/dev/null 2>&1 || return 0
  timeout 10 sinfo -h -N -o '%T' 2>/dev/null || true
}
cluster_up() { node_state | grep -qxE 'idle|mixed|allocated'; }

# 1. Packages (about 15 s on a warm mirror). slurm-wlm pulls slurmctld, slurmd and the
#    client tools (sbatch, squeue, sinfo, scontrol, sacct).
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
  log "installing slurm-wlm and munge"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
fi

# 2. munge: the key is made by the package's postinst; make one if it is missing.
if [ ! -s /etc/munge/munge.key ]; then
  log "creating /etc/munge/munge.key"
  mkdir -p /etc/munge
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
fi
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /etc/munge /etc/munge/munge.key /run/munge /var/log/munge /var/lib/munge
chmod 0700 /etc/munge
chmod 0400 /etc/munge/munge.key
chmod 0755 /run/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  log "starting munged"
  runuser -u munge -- /usr/sbin/munged
  for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.2; done
  munge -n | unmunge >/dev/null || { log "munged does not answer"; tail -20 /var/log/munge/munged.log >&2 || true; exit 1; }
fi

# 3. Configuration, from what this machine is.
NODE=$(hostname -s)
read -r CPUS SOCKETS CORES THREADS MEM < <(slurmd -C | awk '
  /^NodeName/ { for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } }
  END { print v["CPUs"], v["SocketsPerBoard"], v["CoresPerSocket"], v["ThreadsPerCore"], v["RealMemory"] }')
log "this machine: $CPUS CPUs ($SOCKETS sockets x $CORES cores x $THREADS threads), $MEM MB"
# The declared node: the real one where it is bigger than the minimum.
MIN_CPUS=8 MIN_MEM=32768
if [ "$CPUS" -lt "$MIN_CPUS" ] || [ "$MEM" -lt "$MIN_MEM" ]; then
  CPUS=$((CPUS > MIN_CPUS ? CPUS : MIN_CPUS))
  MEM=$((MEM > MIN_MEM ? MEM : MIN_MEM))
  SOCKETS=1 CORES=$CPUS THREADS=1
fi
log "declared node $NODE: $CPUS CPUs, RealMemory=$MEM MB, gres gpu:1 (/dev/null)"

mkdir -p "$CONF_DIR" "$LOG_DIR" /var/spool/slurmctld /var/spool/slurmd /run/slurm
NEW=$(mktemp -d)
trap 'rm -rf "$NEW"' EXIT
cat >"$NEW/slurm.conf" <<EOF
# Written by .ci/slurm.sh: a one-node test cluster on localhost.
ClusterName=localhost
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups: process tracking by /proc, no CPU binding, no memory enforcement.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
# No accounting database; finished jobs are listed in a text file instead.
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$JOBCOMP
# squeue keeps finished jobs for MinJobAge seconds: the Snakemake plugin's squeue status
# polling needs at least 3 x its first status check delay.
MinJobAge=600
ReturnToService=2
# Trust the node size declared below over what slurmd finds (see the top of .ci/slurm.sh).
SlurmdParameters=config_overrides
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS SocketsPerBoard=$SOCKETS CoresPerSocket=$CORES ThreadsPerCore=$THREADS RealMemory=$MEM Gres=gpu:1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
cat >"$NEW/gres.conf" <<EOF
# One GPU slot. Slurm wants a device file for a gpu GRES (without one, slurmd reports
# a count of 0 and the node is set INVALID); /dev/null stands in, nothing is bound to it.
NodeName=$NODE Name=gpu File=/dev/null Count=1
EOF

# 4. Daemons. Run again on an unchanged config with the node idle, there is nothing to do;
#    otherwise daemons left from an earlier run (their pid files name live processes)
#    are stopped and started on the new config.
if cmp -s "$NEW/slurm.conf" "$CONF_DIR/slurm.conf" && cmp -s "$NEW/gres.conf" "$CONF_DIR/gres.conf" && cluster_up; then
  log "cluster already up: $(sinfo -h -N -o '%N %T %c CPUs %m MB %G')"
  exit 0
fi
cp "$NEW/slurm.conf" "$NEW/gres.conf" "$CONF_DIR/"
stop() {
  local pidfile=$1 pid
  [ -s "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  kill -0 "$pid" 2>/dev/null || return 0
  log "stopping $(basename "$pidfile" .pid) (pid $pid)"
  kill "$pid"
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
  log "pid $pid did not stop"; return 1
}
stop /run/slurm/slurmd.pid
stop /run/slurm/slurmctld.pid
log "starting slurmctld and slurmd"
/usr/sbin/slurmctld -c  # -c: start clean, no jobs or node states saved by an earlier run
/usr/sbin/slurmd

# 5. Wait for the node to register and turn idle.
for _ in $(seq 60); do
  [ "$(node_state)" = idle ] && break
  sleep 1
done
if [ "$(node_state)" != idle ]; then
  log "the node did not become idle; sinfo says:"
  sinfo -N -l >&2 || true
  scontrol show node "$NODE" >&2 || true
  log "last lines of the logs:"
  tail -n 30 "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log" >&2 || true
  exit 1
fi
log "cluster up in $(($(date +%s) - START)) s: $(sinfo -h -N -o '%N %T %c CPUs %m MB %G')"
