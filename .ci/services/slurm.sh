#!/usr/bin/env bash
# A one-node Slurm cluster on loopback for CI: partitions `cpu` (default) and `gpu` (one GRES
# gpu, File=/dev/null), no accounting, no cgroups.
#
#   eval "$(bash .ci/services/slurm.sh start)"   # install if missing, start, wait, print exports
#   bash .ci/services/slurm.sh stop              # stop what start started, by PID
#   bash .ci/services/slurm.sh status
#
# State (config, spool, logs, PID files) lives in $TRTFLOW_SERVICES_DIR/slurm
# (default /tmp/trtflow-services/slurm). Logs go to stderr; stdout carries only the
# `export ...` lines: SLURM_CONF (clients read it) and TRTFLOW_SLURM=1 (tests run on it).
set -euo pipefail

STATE="${TRTFLOW_SERVICES_DIR:-/tmp/trtflow-services}/slurm"
CONF="$STATE/slurm.conf"
SYSTEM_CONF=/etc/slurm/slurm.conf
DAEMONS=(munged slurmctld slurmd)

log() { echo "slurm.sh: $*" >&2; }

install_if_missing() {
    local missing=()
    command -v slurmctld >/dev/null || missing+=(slurmctld)
    command -v slurmd >/dev/null || missing+=(slurmd)
    command -v sbatch >/dev/null || missing+=(slurm-client)
    command -v munged >/dev/null || missing+=(munge)
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
    fi
}

write_config() {
    local cpus mem_mb
    cpus=$(nproc)
    mem_mb=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) * 9 / 10240))
    mkdir -p "$STATE"/{spool/ctld,spool/d,log}
    chmod 700 "$STATE"
    if [[ ! -s $STATE/munge.key ]]; then
        dd if=/dev/urandom of="$STATE/munge.key" bs=1024 count=1 status=none
        chmod 400 "$STATE/munge.key"
    fi
    cat >"$CONF" <<EOF
# Written by .ci/services/slurm.sh: one node on 127.0.0.1, two partitions.
ClusterName=trtflow
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
SrunPortRange=60001-60100
# bind every daemon and client to the node's own address (127.0.0.1), not INADDR_ANY
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$STATE/munge.socket
StateSaveLocation=$STATE/spool/ctld
SlurmdSpoolDir=$STATE/spool/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
SchedulerType=sched/backfill
# no accounting: squeue is the status command, so finished jobs must stay visible to it
MinJobAge=600
KillWait=5
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
GresTypes=gpu
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb Gres=gpu:1 State=UNKNOWN
PartitionName=cpu Nodes=localhost Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=localhost MaxTime=INFINITE State=UP
EOF
    cat >"$STATE/gres.conf" <<EOF
NodeName=localhost Name=gpu File=/dev/null
EOF
    # slurmd looks for gres.conf next to slurm.conf; cgroup.conf is not needed (no cgroups).
    # Job steps see the config at the default path, as on a real cluster: the executor's
    # jobstep plugin drops SLURM_* variables (SLURM_CONF too) before its nested srun.
    if [[ -L $SYSTEM_CONF && $(readlink "$SYSTEM_CONF") == "$CONF" ]] || [[ ! -e $SYSTEM_CONF ]]; then
        mkdir -p "$(dirname "$SYSTEM_CONF")"
        ln -sfn "$CONF" "$SYSTEM_CONF"
    else
        log "$SYSTEM_CONF exists and is not ours: leaving it (job steps may not find $CONF)"
    fi
}

is_running() { [[ -s $STATE/$1.run.pid ]] && kill -0 "$(cat "$STATE/$1.run.pid")" 2>/dev/null; }

spawn() { # name, command...: run in the foreground mode of the daemon, record its PID
    local name=$1
    shift
    setsid "$@" >>"$STATE/log/$name.out" 2>&1 </dev/null &
    echo $! >"$STATE/$name.run.pid"
}

print_env() {
    echo "export SLURM_CONF=$CONF"
    echo "export TRTFLOW_SLURM=1"
}

start() {
    install_if_missing
    if is_running slurmctld && is_running slurmd; then
        log "already running"
        print_env
        return
    fi
    stop >/dev/null 2>&1 || true
    write_config
    export SLURM_CONF=$CONF
    spawn munged munged --foreground --force --socket="$STATE/munge.socket" \
        --key-file="$STATE/munge.key" --pid-file="$STATE/munged.pid" \
        --log-file="$STATE/log/munged.log" --seed-file="$STATE/munged.seed"
    for _ in $(seq 50); do [[ -S $STATE/munge.socket ]] && break; sleep 0.2; done
    spawn slurmctld slurmctld -D -i -f "$CONF"
    spawn slurmd slurmd -D -N localhost -f "$CONF"
    local t0=$SECONDS
    until sinfo -h -p gpu -o '%t' 2>/dev/null | grep -qE '^(idle|mix|alloc)'; do
        for d in "${DAEMONS[@]}"; do
            is_running "$d" || { log "$d died:"; tail -20 "$STATE/log/$d.out" "$STATE/log/$d.log" >&2 2>/dev/null || true; exit 1; }
        done
        if ((SECONDS - t0 > 60)); then
            log "node not idle after 60 s"
            sinfo >&2 || true
            tail -20 "$STATE"/log/*.log >&2 || true
            exit 1
        fi
        sleep 0.5
    done
    log "up in $((SECONDS - t0)) s: $(sinfo -h -o '%P %t %G' | tr '\n' ' ')"
    print_env
}

stop() {
    local pid
    for d in slurmd slurmctld munged; do
        [[ -s $STATE/$d.run.pid ]] || continue
        pid=$(cat "$STATE/$d.run.pid")
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid"
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
            kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
            log "stopped $d ($pid)"
        fi
        rm -f "$STATE/$d.run.pid"
    done
    if [[ -L $SYSTEM_CONF && $(readlink "$SYSTEM_CONF") == "$CONF" ]]; then rm -f "$SYSTEM_CONF"; fi
}

status() {
    for d in "${DAEMONS[@]}"; do
        if is_running "$d"; then echo "$d running ($(cat "$STATE/$d.run.pid"))"; else echo "$d stopped"; fi
    done
    SLURM_CONF=$CONF sinfo 2>/dev/null || true
}

case "${1:-}" in
start) start ;;
stop) stop ;;
status) status ;;
env) print_env ;;
*)
    echo "usage: $0 start|stop|status|env" >&2
    exit 2
    ;;
esac
