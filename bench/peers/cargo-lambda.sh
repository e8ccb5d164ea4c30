#!/usr/bin/env bash
# Runs cargo-lambda's `cargo lambda watch` (its local Lambda emulator: Invoke
# API + Runtime API) serving tests/functions/echo-rs (package
# lambent-testfn-echo, binary `bootstrap`) from this workspace.
#
#   bench/peers/cargo-lambda.sh start <port>
#   bench/peers/cargo-lambda.sh stop  <port>
#
# start builds echo-rs first (`cargo build --release -p lambent-testfn-echo`,
# offline, into the workspace's target dir or $CARGO_TARGET_DIR), starts the
# emulator on 127.0.0.1:<port> and returns once the port answers. It prints,
# one KEY=VALUE a line:
#   PEER_BASE_URL=http://127.0.0.1:<port>
#   PEER_FUNCTION=bootstrap
#   PEER_INVOKE_URL=<base>/2015-03-31/functions/bootstrap/invocations
#   PEER_PID=<session id>  PEER_LOG=<log file>
#   PEER_FUNCTION_PID_DIR=<dir>  (echo-rs writes <pid>.pid there as each
#                                 instance starts: count them to see instances)
# Invoke with a plain `POST <invoke url>` and the event as the body: no SigV4.
# The function is started lazily: the first invoke runs `cargo run --release
# -p lambent-testfn-echo --bin bootstrap` (a no-op build, then exec) and waits
# for it; that is this peer's cold start. LAMBENT_BENCH_PEER_WARMUP=N makes
# start invoke N times before returning. (`_`, cargo-lambda's name for the
# default function, works too but is a separate queue with its own instance.)
#
# Environment:
#   CARGO_LAMBDA_CONCURRENCY  instances per function (watch's --concurrency,
#                             default 1: invocations queue and run one at a
#                             time; N > 1: extra instances are started, each a
#                             new `cargo run`, when requests are queued and none
#                             is idle, checked every 100 ms)
#   CARGO_LAMBDA_PROFILE      release (default) or dev
#   CARGO_NET_OFFLINE         defaults to true (no registry access needed)
# Install first with bench/peers/setup.sh cargo-lambda.
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

NAME=cargo-lambda
FUNCTION=bootstrap # the binary name
FUNCTION_DIR="$REPO_ROOT/tests/functions/echo-rs"
PACKAGE=lambent-testfn-echo
usage() { die "usage: $0 start <port> | stop <port>"; }

start() {
    local port="$1"
    valid_port "$port"
    [[ -x "$CARGO_LAMBDA_BIN" ]] || die "cargo-lambda is not installed in $PEERS_DIR; run bench/peers/setup.sh cargo-lambda"
    [[ -f "$FUNCTION_DIR/Cargo.toml" ]] || die "missing $FUNCTION_DIR/Cargo.toml"
    local concurrency="${CARGO_LAMBDA_CONCURRENCY:-1}"
    [[ "$concurrency" =~ ^[1-9][0-9]*$ ]] || die "CARGO_LAMBDA_CONCURRENCY must be a positive integer"
    local profile_flag=()
    case "${CARGO_LAMBDA_PROFILE:-release}" in
    release) profile_flag=(--release) ;;
    dev | debug) ;;
    *) die "CARGO_LAMBDA_PROFILE must be release or dev" ;;
    esac
    export CARGO_NET_OFFLINE="${CARGO_NET_OFFLINE:-true}"

    # Build first, so that the peer's start (its `cargo run`) finds the binary
    # fresh and the harness does not wait on a compile.
    local t0
    t0="$(now)"
    log "$NAME: building $PACKAGE (${CARGO_LAMBDA_PROFILE:-release})"
    (cd "$REPO_ROOT" && cargo build "${profile_flag[@]}" -p "$PACKAGE" --bin bootstrap >&2) ||
        die "cargo build -p $PACKAGE failed"
    log "$NAME: built in $(elapsed "$t0") s"

    # echo-rs writes <pid>.pid into LAMBENT_TEST_PID_DIR when it starts, so
    # the harness can count the instances watch started.
    local pid_dir="$PEERS_DIR/run/$NAME-$port.functions"
    rm -rf "$pid_dir"
    mkdir -p "$pid_dir"

    t0="$(now)"
    # cwd is the function's own directory: watch's file watcher covers the
    # cwd (changes are ignored anyway with --ignore-changes).
    peer_launch "$NAME" "$port" "$FUNCTION_DIR" \
        env PATH="$PEERS_DIR/cargo-lambda/bin:$PATH" LAMBENT_TEST_PID_DIR="$pid_dir" \
        cargo lambda watch --invoke-address 127.0.0.1 --invoke-port "$port" \
        --ignore-changes --concurrency "$concurrency" "${profile_flag[@]}" -p "$PACKAGE"

    local deadline
    deadline=$(($(date +%s) + PEER_START_TIMEOUT))
    until port_open "$port"; do
        peer_alive || peer_fail "$NAME" "$port" "$NAME exited before answering on port $port"
        (($(date +%s) < deadline)) ||
            peer_fail "$NAME" "$port" "$NAME did not answer on port $port within $PEER_START_TIMEOUT s"
        sleep 0.05
    done
    log "$NAME: answering on port $port after $(elapsed "$t0") s (log: $PEER_LOG)"
    peer_warmup "$NAME" "$port" "$FUNCTION"
    print_endpoint "$port" "$FUNCTION"
    echo "PEER_FUNCTION_PID_DIR=$pid_dir"
}

case "${1:-}" in
start)
    [[ $# -eq 2 ]] || usage
    start "$2"
    ;;
stop)
    [[ $# -eq 2 ]] || usage
    valid_port "$2"
    peer_stop "$NAME" "$2"
    rm -rf "$PEERS_DIR/run/$NAME-$2.functions"
    ;;
*) usage ;;
esac
