#!/usr/bin/env bash
# A throw-away one-node SLURM cluster on this machine, for tests/test_slurm.py and for trying
# profiles/slurm by hand. Needs root; installs Debian's slurm-wlm and munge with apt-get when
# they are missing.
#
#   .ci/slurm.sh start    bring the cluster up and wait for the node to be idle; a SLURM that is
#                         already up (with $SLURM_CONF or the default config) is used as it is.
#                         The last line of stdout is `export SLURM_CONF=...` (empty: the default)
#   .ci/slurm.sh stop     cancel the cluster's jobs and stop exactly the daemons `start` started
#   .ci/slurm.sh status   sinfo and squeue of the cluster
#
# State (slurm.conf, logs, spool, the pids of the daemons it started) lives in
# $COMPBIAS_SLURM_DIR (default /tmp/compbias-slurm). Ports are SLURM's defaults (6817, 6818).
set -euo pipefail

DIR=${COMPBIAS_SLURM_DIR:-/tmp/compbias-slurm}
PARTITION=${COMPBIAS_SLURM_PARTITION:-compbias}
STARTED=$DIR/started          # "name pid" of every daemon this script started
CONF=$DIR/slurm.conf
WAIT=${COMPBIAS_SLURM_WAIT:-90}

log() { echo "slurm.sh: $*" >&2; }
die() { log "$*"; exit 1; }

node_state() {  # the node states sinfo reports ("" when SLURM does not answer)
    timeout 10 sinfo -h -N -o %T 2>/dev/null | sort -u | tr '\n' ' ' || true
}

cluster_up() {  # a responsive controller with at least one idle or mixed node
    command -v sinfo >/dev/null 2>&1 || return 1
    case " $(node_state)" in
        *" idle"*|*" mixed"*) return 0 ;;
        *) return 1 ;;
    esac
}

install_packages() {
    local missing=()
    command -v slurmctld >/dev/null 2>&1 || missing+=(slurm-wlm)
    command -v slurmd >/dev/null 2>&1 || missing+=(slurm-wlm)
    command -v sbatch >/dev/null 2>&1 || missing+=(slurm-wlm)
    command -v munged >/dev/null 2>&1 || missing+=(munge)
    [ ${#missing[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null 2>&1 || die "SLURM is not installed and there is no apt-get"
    log "installing slurm-wlm munge with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    # try the current package lists first; update them only when that fails
    if ! apt-get install -y -q slurm-wlm munge >"$DIR/apt.log" 2>&1; then
        apt-get update -q >>"$DIR/apt.log" 2>&1 || true
        apt-get install -y -q slurm-wlm munge >>"$DIR/apt.log" 2>&1 \
            || { tail -20 "$DIR/apt.log" >&2; die "apt-get install slurm-wlm munge failed"; }
    fi
}

munge_works() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
    if munge_works; then
        log "munged already running; using it"
        return 0
    fi
    id munge >/dev/null 2>&1 || die "no munge user (is the munge package installed?)"
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge /etc/munge
    if [ ! -s /etc/munge/munge.key ]; then
        runuser -u munge -- mungekey --create --keyfile=/etc/munge/munge.key
    fi
    rm -f /run/munge/munged.pid
    runuser -u munge -- munged
    local pid
    for _ in $(seq 50); do
        [ -s /run/munge/munged.pid ] && munge_works && break
        sleep 0.1
    done
    pid=$(cat /run/munge/munged.pid 2>/dev/null) || die "munged did not start (see /var/log/munge/munged.log)"
    echo "munged $pid" >>"$STARTED"
    munge_works || die "munged is running but munge -n | unmunge fails"
}

write_conf() {
    local host cpus mem
    host=$(hostname -s)
    cpus=$(slurmd -C | sed -n 's/.* CPUs=\([0-9]*\).*/\1/p')
    mem=$(slurmd -C | sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p')
    [ -n "$cpus" ] && [ -n "$mem" ] || die "cannot read CPUs/RealMemory from slurmd -C"
    mkdir -p "$DIR/state" "$DIR/spool"
    cat >"$CONF" <<EOF
# written by .ci/slurm.sh: one node, this machine
ClusterName=compbias
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
SchedulerType=sched/backfill
SwitchType=switch/none
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
# no accounting database: finished jobs are logged here (and kept by slurmctld for MinJobAge s)
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/jobcomp.log
MinJobAge=600
ReturnToService=2
KillWait=5
SchedulerParameters=sched_interval=2
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

start_daemon() {  # name pidfile command...
    local name=$1 pidfile=$2 pid
    shift 2
    rm -f "$pidfile"
    "$@" || die "$name failed to start (see $DIR/$name.log)"
    for _ in $(seq 100); do [ -s "$pidfile" ] && break; sleep 0.1; done
    pid=$(cat "$pidfile" 2>/dev/null) || die "$name wrote no pid file (see $DIR/$name.log)"
    echo "$name $pid" >>"$STARTED"
}

start() {
    mkdir -p "$DIR"
    if [ -s "$STARTED" ] && [ -s "$CONF" ] && SLURM_CONF=$CONF cluster_up; then
        log "the cluster of $DIR is already up"
        echo "export SLURM_CONF=$CONF"
        return 0
    fi
    if cluster_up; then
        log "a SLURM cluster is already up (${SLURM_CONF:-default config}); using it, starting nothing"
        echo "export SLURM_CONF=${SLURM_CONF:-}"
        return 0
    fi
    [ "$(id -u)" -eq 0 ] || die "must run as root to start SLURM"
    install_packages
    [ -s "$STARTED" ] && stop_started
    : >"$STARTED"
    start_munge
    write_conf
    export SLURM_CONF=$CONF
    local t0=$SECONDS
    start_daemon slurmctld "$DIR/slurmctld.pid" slurmctld -f "$CONF"
    start_daemon slurmd "$DIR/slurmd.pid" slurmd -f "$CONF"
    local state=""
    while [ $((SECONDS - t0)) -lt "$WAIT" ]; do
        state=$(node_state)
        case "$state" in
            *idle*|*mixed*) break ;;
            *down*|*drain*) scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true ;;
        esac
        sleep 1
    done
    case "$state" in
        *idle*|*mixed*) ;;
        *) tail -5 "$DIR/slurmctld.log" "$DIR/slurmd.log" >&2 || true
           die "node not idle after ${WAIT}s (state: ${state:-no answer})" ;;
    esac
    log "node $(hostname -s) idle after $((SECONDS - t0))s ($(grep -o 'CPUs=[0-9]* RealMemory=[0-9]*' "$CONF"))"
    echo "export SLURM_CONF=$CONF"
}

alive() {  # pid name: is pid a live process called name?
    [ -r "/proc/$1/comm" ] && [ "$(cat "/proc/$1/comm")" = "$2" ]
}

stop_started() {
    [ -s "$STARTED" ] || { log "nothing to stop"; return 0; }
    export SLURM_CONF=$CONF
    if grep -q '^slurmctld ' "$STARTED"; then
        # the jobs on our own cluster: cancel them so that no slurmstepd outlives slurmd
        timeout 10 scancel --partition="$PARTITION" >/dev/null 2>&1 || true
        for _ in $(seq 20); do
            [ -z "$(timeout 5 squeue -h -o %i 2>/dev/null)" ] && break
            sleep 0.5
        done
    fi
    local name pid
    for name in slurmd slurmctld munged; do
        pid=$(awk -v n="$name" '$1 == n {print $2}' "$STARTED" | tail -1)
        [ -n "$pid" ] || continue
        if alive "$pid" "$name"; then
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 100); do alive "$pid" "$name" || break; sleep 0.1; done
            alive "$pid" "$name" && kill -KILL "$pid" 2>/dev/null || true
            log "stopped $name ($pid)"
        fi
    done
    : >"$STARTED"
}

case "${1:-}" in
    start) start ;;
    stop) stop_started ;;
    status)
        export SLURM_CONF=${SLURM_CONF:-$CONF}
        sinfo; squeue ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
