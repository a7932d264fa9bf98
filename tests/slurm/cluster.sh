#!/usr/bin/env bash
# A single-node SLURM cluster on localhost for the tests: cluster.sh start DIR | stop DIR
# Needs Debian's slurm-wlm and munge (.ci/run installs them) and root (slurmd runs jobs as their user).
set -euo pipefail
cmd=$1
dir=$(realpath -m "$2")
case "$cmd" in
start)
  mkdir -p "$dir"/{state,spool,munge,logs}
  host=$(hostname -s)
  cpus=$(nproc --all)  # plain nproc obeys OMP_NUM_THREADS (1 under make test)
  mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2 ))
  if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge && dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
    chmod 400 /etc/munge/munge.key
  fi
  chown -R munge:munge /etc/munge 2>/dev/null || true
  mkdir -p /run/munge /var/lib/munge /var/log/munge && chown munge:munge /run/munge /var/lib/munge /var/log/munge
  pgrep -x munged > /dev/null || sudo -u munge /usr/sbin/munged 2>/dev/null || /usr/sbin/munged --force
  cat > "$dir/slurm.conf" <<CONF
ClusterName=isolimbtest
SlurmctldHost=$host
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmctldPort=6917
SlurmdPort=6918
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/logs/slurmctld.log
SlurmdLogFile=$dir/logs/slurmd.log
JobCompType=jobcomp/none
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=test Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
  export SLURM_CONF="$dir/slurm.conf"
  /usr/sbin/slurmctld -f "$SLURM_CONF"
  /usr/sbin/slurmd -f "$SLURM_CONF"
  for _ in $(seq 60); do
    if sinfo -h -o %T 2>/dev/null | grep -q -E "^idle"; then echo "$SLURM_CONF"; exit 0; fi
    sleep 1
  done
  echo "SLURM did not come up; logs in $dir/logs" >&2
  exit 1
  ;;
stop)
  for pid in "$dir/slurmd.pid" "$dir/slurmctld.pid"; do
    [ -f "$pid" ] && kill "$(cat "$pid")" 2>/dev/null || true
  done
  ;;
esac
