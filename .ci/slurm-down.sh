#!/usr/bin/env bash
# Stop the daemons that .ci/slurm-up.sh started, each by the pid in its pid file.
BASE=${SLURM_CI_DIR:-/tmp/equihash-slurm}
stop() {  # $1: pid file
  [ -s "$1" ] || return 0
  local pid
  pid=$(cat "$1")
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 50); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.2
  done
  kill -9 "$pid" 2>/dev/null || true
}
stop "$BASE/slurmd.pid"
stop "$BASE/slurmctld.pid"
stop /run/munge/munged.pid
