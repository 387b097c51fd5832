#!/usr/bin/env bash
# A one-node SLURM cluster on localhost for tests/test_slurm.py (Debian/Ubuntu, as root).
# Installs slurmctld, slurmd, slurm-client and munge when missing, writes a slurm.conf for
# this host (all its CPUs, 90% of its memory, partition $SLURM_CI_PARTITION), starts munged,
# slurmctld and slurmd, and returns once the node is idle. No systemd, cgroups or
# accounting database is needed. State and logs: $SLURM_CI_DIR (.ci/slurm-down.sh stops it).
set -euo pipefail
BASE=${SLURM_CI_DIR:-/tmp/equihash-slurm}
PARTITION=${SLURM_CI_PARTITION:-debug}
NODE=$(hostname -s)
CPUS=$(nproc)
MEMORY_MB=$(( $(free -m | awk '/^Mem:/ {print $2}') * 90 / 100 ))

if sinfo -h -o '%T' 2>/dev/null | grep -qx idle; then
  echo "slurm-up.sh: a SLURM controller already answers and a node is idle; nothing started"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "slurm-up.sh: must run as root (it installs packages and starts daemons)" >&2
  exit 1
fi
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
   || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    slurmctld slurmd slurm-client munge >/dev/null
fi

mkdir -p "$BASE/state" "$BASE/spool" "$BASE/log"
chown slurm:slurm "$BASE/state" "$BASE/log"
mkdir -p /etc/slurm
cat > /etc/slurm/slurm.conf <<CONF
# Written by equihash .ci/slurm-up.sh: one node, no accounting (Snakemake polls squeue).
ClusterName=equihash-ci
SlurmctldHost=${NODE}(127.0.0.1)
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
# the main scheduler starts every job (and logs "sched: Allocate JobId=..."); no backfill on one node
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MinJobAge=300
StateSaveLocation=$BASE/state
SlurmdSpoolDir=$BASE/spool
SlurmctldPidFile=$BASE/slurmctld.pid
SlurmdPidFile=$BASE/slurmd.pid
SlurmctldLogFile=$BASE/log/slurmctld.log
SlurmdLogFile=$BASE/log/slurmd.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEMORY_MB State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
CONF

# munge authenticates every SLURM message; the Debian package usually creates the key.
if [ ! -s /etc/munge/munge.key ]; then
  mungekey --create --keyfile /etc/munge/munge.key 2>/dev/null \
    || dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
mkdir -p /run/munge
chown munge:munge /run/munge
chmod 0755 /run/munge
if ! munge -n >/dev/null 2>&1; then
  runuser -u munge -- /usr/sbin/munged
  for _ in $(seq 50); do munge -n >/dev/null 2>&1 && break; sleep 0.1; done
fi
munge -n | unmunge >/dev/null

/usr/sbin/slurmctld   # both daemonize and write their pid files under $BASE
/usr/sbin/slurmd

for _ in $(seq 60); do
  sinfo -h -o '%T' 2>/dev/null | grep -qx idle && break
  sleep 0.5
done
if ! sinfo -h -o '%T' | grep -qx idle; then
  echo "slurm-up.sh: node $NODE did not become idle; see $BASE/log/" >&2
  sinfo >&2 || true
  exit 1
fi
srun --nodes=1 --ntasks=1 --time=1 true
echo "slurm-up.sh: partition $PARTITION on $NODE ($CPUS CPUs, $MEMORY_MB MB) is idle; logs in $BASE/log"
