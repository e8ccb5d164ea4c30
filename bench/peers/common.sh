# shellcheck shell=bash
# shellcheck disable=SC2034 # the variables are used by the scripts that source this
# Shared by bench/peers/*.sh (sourced, not run). Bash only.
#
# Peers are installed and run outside the repository, in $LAMBENT_BENCH_PEERS
# (default /var/cache/lambent-bench-peers):
#   cargo-lambda/bin/cargo-lambda   cargo-lambda, built from crates.io by setup.sh
#   serverless/node_modules/        serverless@3 + serverless-offline, from npm by setup.sh
#   run/<peer>-<port>.pid           the session (and process group) id of a running peer
#   logs/<peer>-<port>.log          its output
# Nothing a peer writes goes into the repository.

PEERS_DIR="${LAMBENT_BENCH_PEERS:-/var/cache/lambent-bench-peers}"
PEERS_SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$PEERS_SCRIPT_DIR/../.." && pwd)"

# Pinned versions (change here, then run setup.sh again).
CARGO_LAMBDA_VERSION="1.9.2"
SERVERLESS_VERSION="3.40.0"          # must match bench/peers/npm/package.json
SERVERLESS_OFFLINE_VERSION="13.10.1" # must match bench/peers/npm/package.json

CARGO_LAMBDA_BIN="$PEERS_DIR/cargo-lambda/bin/cargo-lambda"
SERVERLESS_BIN="$PEERS_DIR/serverless/node_modules/.bin/serverless"

# How long `start` waits for a peer to answer (seconds).
PEER_START_TIMEOUT="${LAMBENT_BENCH_PEER_START_TIMEOUT:-180}"

log() { printf '%s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

valid_port() {
    if ! [[ "$1" =~ ^[0-9]+$ ]] || (($1 < 1 || $1 > 65535)); then die "not a TCP port: '$1'"; fi
}

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

pid_file() { echo "$PEERS_DIR/run/$1-$2.pid"; }
log_file() { echo "$PEERS_DIR/logs/$1-$2.log"; }

# Every process of the peer started as session $1 (setsid makes its leader's
# pid the session id): the session's members, their descendants, and the
# members of sessions those descendants lead (watchexec, in cargo-lambda,
# starts the function in a session of its own).
session_pids() {
    ps -e -o pid= -o ppid= -o sid= | awk -v s="$1" '
        { pid[NR] = $1; ppid[NR] = $2; sid[NR] = $3 }
        END {
            in_tree[s] = 1
            do {
                changed = 0
                for (i = 1; i <= NR; i++) {
                    if (in_tree[pid[i]]) continue
                    if (sid[i] == s || in_tree[ppid[i]] || (sid[i] != pid[i] && in_tree[sid[i]])) {
                        in_tree[pid[i]] = 1; changed = 1
                    }
                }
            } while (changed)
            for (i = 1; i <= NR; i++) if (in_tree[pid[i]]) print pid[i]
        }'
}

# peer_launch NAME PORT DIR CMD...: runs CMD in DIR, in a new session, in the
# background, output to the log file; records the session id.
peer_launch() {
    local name="$1" port="$2" dir="$3"
    shift 3
    local pidf logf
    pidf="$(pid_file "$name" "$port")"
    logf="$(log_file "$name" "$port")"
    mkdir -p "$PEERS_DIR/run" "$PEERS_DIR/logs"
    if [[ -f "$pidf" ]]; then
        local old
        old="$(cat "$pidf")"
        if [[ -n "$(session_pids "$old")" ]]; then
            die "$name is already running on port $port (session $old); stop it first"
        fi
        rm -f "$pidf"
    fi
    port_open "$port" && die "port $port is already in use"
    : >"$logf"
    # setsid makes the child a session and process-group leader, so its pid is
    # the id that stop kills. stdin from /dev/null: nothing is interactive.
    (cd "$dir" && exec setsid "$@" </dev/null >>"$logf" 2>&1) &
    PEER_PID=$!
    PEER_LOG="$logf"
    echo "$PEER_PID" >"$pidf"
    # The subshell execs setsid, which (not being a group leader) makes the
    # session in place: wait until the pid leads its own session.
    local i sid
    for i in $(seq 1 50); do
        sid="$(ps -o sid= -p "$PEER_PID" 2>/dev/null | tr -d ' ')"
        [[ "$sid" == "$PEER_PID" ]] && return 0
        [[ -z "$sid" ]] && break
        sleep 0.02
    done
    peer_fail "$name" "$port" "could not start $name in its own session (see $logf)"
}

# peer_alive: the launched leader is still running.
peer_alive() { kill -0 "$PEER_PID" 2>/dev/null; }

peer_fail() {
    log "---- last lines of $PEER_LOG ----"
    tail -n 40 "$PEER_LOG" >&2
    log "----"
    peer_stop "$1" "$2" >/dev/null 2>&1 || true
    die "$3"
}

# proc_tokens PID...: "pid:starttime" for each pid that exists, so that a pid
# reused by an unrelated process later is not mistaken for the peer's.
# shellcheck disable=SC2086 # split on purpose
proc_tokens() {
    local p stat
    for p in "$@"; do
        stat="$(cat "/proc/$p/stat" 2>/dev/null)" || continue
        # Fields after the ")" that ends the command name: state is the 1st,
        # start time the 20th (field 22 of the line).
        set -- ${stat##*) }
        echo "$p:${20}"
    done
}

# alive_tokens TOKEN...: the pids of those tokens whose process still exists,
# is the same process (same start time), and is not a zombie.
# shellcheck disable=SC2086 # split on purpose
alive_tokens() {
    local t p start stat
    for t in "$@"; do
        p="${t%%:*}" start="${t#*:}"
        stat="$(cat "/proc/$p/stat" 2>/dev/null)" || continue
        set -- ${stat##*) }
        if [[ "$1" != Z && "${20}" == "$start" ]]; then echo "$p"; fi
    done | sort -un
}

# peer_stop NAME PORT: SIGTERM to the peer's process group, up to 10 s for a
# graceful exit, then SIGKILL to whatever is left of its process tree; returns
# 0 once nothing of it runs.
# shellcheck disable=SC2046,SC2086 # pid lists are split on purpose
peer_stop() {
    local name="$1" port="$2" pidf sid known left i
    pidf="$(pid_file "$name" "$port")"
    if [[ ! -f "$pidf" ]]; then
        log "$name on port $port: not running (no $pidf)"
        return 0
    fi
    sid="$(cat "$pidf")"
    [[ "$sid" =~ ^[0-9]+$ ]] || die "corrupt pid file $pidf"
    # Remember the whole tree first: children whose parent exits are
    # reparented and would drop out of it.
    known="$(proc_tokens $(session_pids "$sid"))"
    if [[ -n "$known" ]]; then
        kill -TERM -- "-$sid" 2>/dev/null || true
        for i in $(seq 1 100); do
            [[ -z "$(alive_tokens $known)" ]] && break
            sleep 0.1
        done
        known="$known $(proc_tokens $(session_pids "$sid"))"
        left="$(alive_tokens $known)"
        if [[ -n "$left" ]]; then
            log "$name on port $port: still running 10 s after SIGTERM, sending SIGKILL to" $left
            # shellcheck disable=SC2086
            kill -KILL $left 2>/dev/null || true
            for i in $(seq 1 50); do
                [[ -z "$(alive_tokens $known)" ]] && break
                sleep 0.1
            done
        fi
    fi
    left="$(alive_tokens $known $(proc_tokens $(session_pids "$sid")))"
    [[ -z "$left" ]] || die "$name on port $port: processes left:" $left
    rm -f "$pidf"
    log "$name on port $port: stopped (session $sid), nothing left running"
}

# peer_warmup NAME PORT FUNCTION: when LAMBENT_BENCH_PEER_WARMUP=N (default 0)
# is set, invokes FUNCTION N times (one after another) before `start` returns,
# so that the first instance is already running; by default nothing is invoked
# and the harness's first invoke is the peer's cold start.
peer_warmup() {
    local name="$1" port="$2" function="$3" n="${LAMBENT_BENCH_PEER_WARMUP:-0}" i code t0
    [[ "$n" =~ ^[0-9]+$ ]] || die "LAMBENT_BENCH_PEER_WARMUP must be a count"
    ((n > 0)) || return 0
    t0="$(now)"
    for ((i = 0; i < n; i++)); do
        code="$(curl -s -o /dev/null -m "$PEER_START_TIMEOUT" -w '%{http_code}' -X POST \
            -H 'content-type: application/json' -d '{"warmup":true}' \
            "http://127.0.0.1:$port/2015-03-31/functions/$function/invocations" || true)"
        [[ "$code" == 200 ]] || peer_fail "$name" "$port" "warm-up invoke of $function answered HTTP '$code'"
    done
    log "$name: $n warm-up invoke(s) of $function in $(elapsed "$t0") s"
}

# Printed by `start` on stdout, one KEY=VALUE a line, for the harness.
print_endpoint() {
    local port="$1" function="$2"
    echo "PEER_BASE_URL=http://127.0.0.1:$port"
    echo "PEER_FUNCTION=$function"
    echo "PEER_INVOKE_URL=http://127.0.0.1:$port/2015-03-31/functions/$function/invocations"
    echo "PEER_PID=$PEER_PID"
    echo "PEER_LOG=$PEER_LOG"
}
