#!/usr/bin/env bash
# A real SLURM cluster on this machine, for tests and demos: one node, or K nodes that
# behave as separate hosts.
#
#   slurm/local-cluster.sh start [--nodes K]  # idempotent (also restarts a killed node's
#                                             # slurmd); prints `export SLURM_CONF=...`
#   slurm/local-cluster.sh status             # sinfo + squeue; exit 1 when the cluster is down
#   slurm/local-cluster.sh stop               # cancels every job, stops the daemons; idempotent
#   slurm/local-cluster.sh kill-node NAME     # node loss: SIGKILL its slurmd and every process
#                                             # on it, mark it DOWN (`start` brings it back)
#
# One node (the default) is this machine itself: slurmd on 127.0.0.1 under the machine's
# hostname. With --nodes K >= 2 each node nodeI runs its slurmd in its own network, UTS and
# mount namespace: own hostname (nodeI), own address 10.X.Y.(I+1) on a veth pair into a
# bridge this script creates (10.X.Y.1, the controller's address; X.Y from the port), and
# an /etc/hosts that names every node, so jobs, srun steps and torch.distributed
# rendezvous (MASTER_ADDR = the first node's name) see K real hosts. That needs root
# (CAP_NET_ADMIN, CAP_SYS_ADMIN) and iproute2. slurmd's own multiple-node mode
# (`slurmd -N NAME`, `--enable-multiple-slurmd`) is compiled into Debian's 22.05 build
# (`scontrol show config` lists MULTIPLE_SLURMD), but all its nodes share this machine's
# hostname and address, so `srun -N 2 hostname` would print one name twice and nothing
# host-specific (rendezvous address, a node's processes, its network) would be tested;
# docs/multi-node.md has the details.
#
# Everything (munge key and socket, slurm.conf, controller state, spool, logs) lives under
# $PERCEIVER_SLURM_DIR (default /tmp/perceiver-slurm), and the ports are not SLURM's
# defaults, so a system munge or SLURM on the same machine is never touched. Daemons are
# started directly (no systemd). Messages go to stderr so `eval "$(... start)"` works.
set -euo pipefail

STATE_DIR=${PERCEIVER_SLURM_DIR:-/tmp/perceiver-slurm}
START_TIMEOUT_S=${PERCEIVER_SLURM_START_TIMEOUT:-60}
CTLD_PORT=${PERCEIVER_SLURM_PORT:-16817}
CONF=$STATE_DIR/etc/slurm.conf
NODES_FILE=$STATE_DIR/etc/nodes  # the node count of the running cluster
HOSTS=$STATE_DIR/etc/hosts       # the nodes' /etc/hosts (K >= 2)
MUNGE_DIR=$STATE_DIR/munge
MUNGE_SOCKET=$MUNGE_DIR/munge.socket
RUN_DIR=$STATE_DIR/run
LOG_DIR=$STATE_DIR/log
# Multi-node network: names and a /24 derived from the port, so two clusters on this
# machine (the test session's, an engineer's own) never share a bridge or an address.
# PERCEIVER_SLURM_SUBNET (three octets) moves it if that /24 is in use on this machine.
BRIDGE=psl$CTLD_PORT
SUBNET=${PERCEIVER_SLURM_SUBNET:-10.$(((CTLD_PORT >> 8) & 255)).$((CTLD_PORT & 255))}
CTLD_ADDR=$SUBNET.1
export PATH=/usr/sbin:/sbin:$PATH
export SLURM_CONF=$CONF

say() { echo "local-cluster: $*" >&2; }
die() { say "error: $*"; exit 1; }

require_binaries() {
    local missing=()
    for bin in munged mungekey slurmctld slurmd sinfo squeue sbatch scontrol scancel "$@"; do
        command -v "$bin" >/dev/null || missing+=("$bin")
    done
    if ((${#missing[@]})); then
        die "missing ${missing[*]}; install them with \`apt-get install slurm-wlm munge" \
            "iproute2\` (or run \`make test\`, which does it)"
    fi
}

# pid of a running daemon from its pid file, or nothing.
running_pid() {
    local pid
    pid=$(cat "$RUN_DIR/$1.pid" 2>/dev/null) || return 1
    kill -0 "$pid" 2>/dev/null && echo "$pid"
}

node_count() { cat "$NODES_FILE" 2>/dev/null || echo 1; }
node_names() { local i; for ((i = 1; i <= $(node_count); i++)); do echo "node$i"; done; }
netns() { echo "perceiver-$CTLD_PORT-$1"; }
# slurmd's pid-file name for a node: one node keeps the historical slurmd.pid.
slurmd_name() { if (($(node_count) == 1)); then echo slurmd; else echo "slurmd-$1"; fi; }

write_config() {
    local nodes=$1 node user cpus mem i
    # The node line as slurmd itself detects it: real CPU layout and memory.
    node=$(slurmd -C | head -n1)
    user=$(id -un)
    cpus=$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$node")
    mem=$(sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p' <<<"$node")
    mkdir -p "$STATE_DIR/etc" "$STATE_DIR/ctld" "$STATE_DIR/spool" "$RUN_DIR" "$LOG_DIR"
    echo "$nodes" >"$NODES_FILE"
    local ctld_host="$(hostname -s)(127.0.0.1)" slurmd_files nodelines
    slurmd_files="SlurmdSpoolDir=$STATE_DIR/spool
SlurmdPidFile=$RUN_DIR/slurmd.pid
SlurmdLogFile=$LOG_DIR/slurmd.log"
    nodelines="$node NodeAddr=127.0.0.1 State=UNKNOWN"
    if ((nodes > 1)); then
        # Every node claims the whole machine (CPUs and memory are oversubscribed K times).
        ctld_host="$(hostname -s)($CTLD_ADDR)"
        slurmd_files="SlurmdSpoolDir=$STATE_DIR/spool/%n
SlurmdPidFile=$RUN_DIR/slurmd-%n.pid
SlurmdLogFile=$LOG_DIR/slurmd-%n.log"
        nodelines=""
        printf '127.0.0.1 localhost\n%s %s\n' "$CTLD_ADDR" "$(hostname -s)" >"$HOSTS"
        for ((i = 1; i <= nodes; i++)); do
            nodelines+="NodeName=node$i NodeAddr=$SUBNET.$((i + 1)) ${node#NodeName=* }"
            nodelines+=$' State=UNKNOWN\n'
            echo "$SUBNET.$((i + 1)) node$i" >>"$HOSTS"
        done
    fi
    cat >"$CONF" <<EOF
# Generated by slurm/local-cluster.sh; rewritten on every start.
ClusterName=perceiver
SlurmctldHost=$ctld_host
SlurmctldPort=$CTLD_PORT
SlurmdPort=$((CTLD_PORT + 1))
SlurmUser=$user
SlurmdUser=$user
AuthType=auth/munge
CredType=cred/munge
# cred_expire is also how long a requeued job waits before it may start again (default 120 s).
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=5
StateSaveLocation=$STATE_DIR/ctld
$slurmd_files
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
PlugStackConfig=$STATE_DIR/etc/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$((mem / cpus))
SchedulerType=sched/backfill
# Schedule within a second of a job becoming eligible (defaults: 60 s main loop, 30 s backfill).
SchedulerParameters=sched_interval=1,bf_interval=1,batch_sched_delay=0
# Requeue allowed: submitit requeues preempted/timed-out jobs with scontrol requeue, and
# the controller requeues a batch job whose node goes DOWN.
JobRequeue=1
# A DOWN node (kill-node) returns to service as soon as its slurmd registers again.
ReturnToService=2
# No slurmdbd here, so sacct has no data; finished jobs are logged to a text file instead.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$LOG_DIR/jobcomp.txt
# Short timeouts: a test cluster should fail and recover fast.
SlurmctldTimeout=30
SlurmdTimeout=30
MessageTimeout=10
KillWait=5
InactiveLimit=0
Waittime=0
# Without sacct, finished jobs stay visible to squeue/scontrol for 10 minutes.
MinJobAge=600
MailProg=/bin/true
$nodelines
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    : >"$STATE_DIR/etc/plugstack.conf"
}

start_munged() {
    running_pid munged >/dev/null && return
    mkdir -p "$MUNGE_DIR" "$RUN_DIR" "$LOG_DIR"
    chmod 0755 "$MUNGE_DIR"
    [[ -s $MUNGE_DIR/munge.key ]] || mungekey --create --keyfile="$MUNGE_DIR/munge.key"
    chmod 0600 "$MUNGE_DIR/munge.key"
    munged --key-file="$MUNGE_DIR/munge.key" --socket="$MUNGE_SOCKET" \
        --pid-file="$RUN_DIR/munged.pid" --log-file="$LOG_DIR/munged.log" \
        --seed-file="$MUNGE_DIR/munged.seed" --force  # --force: reuse a socket left by a crash
}

# The bridge (controller side) and, per node, a named network namespace joined to it by a
# veth pair. Idempotent: a killed node keeps its namespace and gets its slurmd back.
create_network() {
    local nodes=$1 i ns
    if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
        ip link add "$BRIDGE" type bridge
        ip addr add "$CTLD_ADDR/24" dev "$BRIDGE"
    fi
    ip link set "$BRIDGE" up
    for ((i = 1; i <= nodes; i++)); do
        ns=$(netns "node$i")
        [[ -e /run/netns/$ns ]] && continue
        ip netns add "$ns"
        ip link add "$BRIDGE-$i" type veth peer name "$BRIDGE-${i}p"
        ip link set "$BRIDGE-${i}p" netns "$ns"
        ip link set "$BRIDGE-$i" master "$BRIDGE" up
        ip -n "$ns" link set lo up
        ip -n "$ns" link set "$BRIDGE-${i}p" name eth0
        ip -n "$ns" addr add "$SUBNET.$((i + 1))/24" dev eth0
        ip -n "$ns" link set eth0 up
    done
}

delete_network() {
    local ns
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}'); do
        [[ $ns == perceiver-$CTLD_PORT-* ]] && ip netns delete "$ns"  # and its veth pair
    done
    ip link show "$BRIDGE" >/dev/null 2>&1 && ip link delete "$BRIDGE"
    return 0
}

# slurmd of node $1 in its namespaces: hostname nodeI, the nodes' /etc/hosts (bind-mounted
# in a private mount namespace, so this machine's own file is untouched). nsenter rather
# than `ip netns exec`, which remounts /sys and so hides the cgroup tree slurmd reads.
start_node_slurmd() {
    mkdir -p "$STATE_DIR/spool/$1"
    nsenter --net="/run/netns/$(netns "$1")" unshare --uts --mount --propagation private \
        sh -c 'hostname "$1" && mount --bind "$2" /etc/hosts && exec slurmd -N "$1" -f "$3"' \
        sh "$1" "$HOSTS" "$CONF"
}

start_slurmds() {
    local name
    if (($(node_count) == 1)); then
        running_pid slurmd >/dev/null || slurmd -f "$CONF"
        return
    fi
    for name in $(node_names); do
        running_pid "slurmd-$name" >/dev/null || start_node_slurmd "$name"
    done
}

all_slurmds_running() {
    local name
    for name in $(node_names); do running_pid "$(slurmd_name "$name")" >/dev/null || return 1; done
}

# Seconds since an $EPOCHREALTIME stamp, with $2 decimals (default 0).
seconds_since() {
    awk -v t0="$1" -v now="$EPOCHREALTIME" -v d="${2:-0}" 'BEGIN { printf "%.*f", d, now - t0 }'
}

# How many nodes sinfo reports usable (idle, mixed or allocated).
usable_nodes() {
    sinfo --noheader --Node --format=%t 2>/dev/null | grep -cxE 'idle|mix|alloc' || true
}

show_logs() {
    local log
    for log in "$LOG_DIR"/{munged,slurmctld,slurmd}*.log; do
        [[ -f $log ]] || continue
        echo "--- last lines of $log" >&2
        tail -n 15 "$log" >&2
    done
}

parse_nodes() {
    local nodes=""
    while (($#)); do
        case $1 in
            --nodes) nodes=${2:-}; shift 2 || true ;;
            --nodes=*) nodes=${1#--nodes=}; shift ;;
            *) die "unknown option '$1'; usage: $0 start [--nodes K]" ;;
        esac
    done
    if [[ -n $nodes && ! $nodes =~ ^[1-9][0-9]*$ ]]; then
        die "--nodes '$nodes' must be a whole number >= 1"
    fi
    echo "$nodes"
}

cmd_start() {
    local asked nodes
    asked=$(parse_nodes "$@")
    if running_pid slurmctld >/dev/null; then
        nodes=$(node_count)
        if [[ -n $asked && $asked != "$nodes" ]]; then
            die "running with $nodes node(s), --nodes $asked asked: \`$0 stop\` first"
        fi
    else
        nodes=${asked:-1}
    fi
    if ((nodes > 1)); then
        require_binaries ip unshare nsenter
        ((EUID == 0)) || die "--nodes $nodes needs root: each node gets its own network and" \
            "UTS namespace (CAP_NET_ADMIN, CAP_SYS_ADMIN); run as root or use one node"
    else
        require_binaries
    fi
    if running_pid munged >/dev/null && running_pid slurmctld >/dev/null \
        && all_slurmds_running && (($(usable_nodes) == nodes)); then
        say "already running: $nodes node(s) (state dir $STATE_DIR)"
        echo "export SLURM_CONF=$CONF"
        return
    fi
    local t0=$EPOCHREALTIME
    running_pid slurmctld >/dev/null || write_config "$nodes"
    start_munged
    ((nodes == 1)) || create_network "$nodes"
    running_pid slurmctld >/dev/null || slurmctld -f "$CONF"
    start_slurmds
    local usable=0
    while (($(seconds_since "$t0") < START_TIMEOUT_S)); do
        usable=$(usable_nodes)
        ((usable == nodes)) && break
        sleep 0.2
    done
    if ((usable != nodes)); then
        say "$usable of $nodes node(s) usable after ${START_TIMEOUT_S}s; sinfo says:"
        sinfo --Node --long >&2 || true
        show_logs
        die "cluster did not come up; fix the cause above, then \`$0 stop && $0 start\`"
    fi
    say "up in $(seconds_since "$t0" 1)s: $nodes node(s) ($(node_names | paste -sd, -))," \
        "partition debug (state dir $STATE_DIR)"
    echo "export SLURM_CONF=$CONF"
}

# SIGTERM the daemons together (each takes ~2 s to exit) and wait; SIGKILL after 10 s.
stop_daemons() {
    local name pid pids=()
    for name in "$@"; do
        pid=$(running_pid "$name") && kill "$pid" && pids+=("$pid")
        rm -f "$RUN_DIR/$name.pid"
    done
    ((${#pids[@]})) || return 0
    for _ in $(seq 100); do
        kill -0 "${pids[@]}" 2>/dev/null || return 0
        sleep 0.1
    done
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
}

cmd_stop() {
    local slurmds=() name
    if running_pid slurmctld >/dev/null; then
        # A test cluster keeps nothing running after stop: jobs would otherwise outlive
        # slurmd (proctrack/linuxproc) and resume unexpectedly on the next start.
        scancel --user="$(id -un)" || true
        for _ in $(seq 100); do
            [[ -z $(squeue --noheader --states=RUNNING,COMPLETING) ]] && break
            sleep 0.1
        done
    fi
    for name in $(node_names); do slurmds+=("$(slurmd_name "$name")"); done
    stop_daemons "${slurmds[@]}" slurmctld munged
    (($(node_count) == 1)) || delete_network
    rm -f "$NODES_FILE"
    say "stopped (state dir $STATE_DIR)"
}

# Node loss, as when a machine dies: everything on the node is SIGKILLed at once (its
# slurmd, slurmstepd and the job's processes: all processes in its network namespace), and
# the node is marked DOWN, as the controller would after SlurmdTimeout without the wait.
# A batch job running there is requeued by the controller (JobRequeue=1).
cmd_kill_node() {
    local name=${1:-} pids
    (($(node_count) > 1)) || die "kill-node needs a multi-node cluster (\`$0 start --nodes 2\`)"
    [[ -n $name ]] && node_names | grep -qx "$name" \
        || die "kill-node NAME: NAME must be one of $(node_names | paste -sd' ' -)"
    pids=$(ip netns pids "$(netns "$name")")
    [[ -n $pids ]] && kill -9 $pids
    rm -f "$RUN_DIR/slurmd-$name.pid"
    scontrol update NodeName="$name" State=DOWN Reason="kill-node: node lost"
    say "node $name lost: killed $(wc -w <<<"$pids") process(es), marked DOWN;" \
        "\`$0 start\` brings it back"
}

cmd_status() {
    local name
    if ! running_pid slurmctld >/dev/null || ! running_pid munged >/dev/null; then
        say "down (state dir $STATE_DIR)"
        return 1
    fi
    for name in $(node_names); do
        running_pid "$(slurmd_name "$name")" >/dev/null || say "node $name: slurmd not running"
    done
    sinfo && squeue
    echo "export SLURM_CONF=$CONF"
}

command=${1:-}
shift || true
case $command in
    start) cmd_start "$@" ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    kill-node) cmd_kill_node "$@" ;;
    *) echo "usage: $0 start [--nodes K]|status|stop|kill-node NAME" >&2; exit 2 ;;
esac
