#!/usr/bin/env bash
# Runs serverless-offline (Serverless Framework v3) serving the echo functions
# of bench/peers/serverless/ on its Lambda Invoke API endpoint.
#
#   bench/peers/serverless-offline.sh start <port> <node|python>
#   bench/peers/serverless-offline.sh stop  <port>
#
# start returns once the endpoint answers and prints, one KEY=VALUE a line:
#   PEER_BASE_URL=http://127.0.0.1:<port>
#   PEER_FUNCTION=lambent-bench-bench-echo-node   (or ...-echo-python)
#   PEER_INVOKE_URL=<base>/2015-03-31/functions/<function>/invocations
#   PEER_PID=<session id>  PEER_LOG=<log file>
# Invoke with a plain `POST <invoke url>` and the event as the body: no SigV4.
# Both functions are served whichever runtime is named; the runtime only picks
# the function printed. Nothing is started before the first invoke: the first
# invoke of each concurrent instance is its cold start (a worker thread in the
# serverless process for Node, a `python3` child process for Python).
# LAMBENT_BENCH_PEER_WARMUP=N makes start invoke N times before returning.
# Concurrent invokes get one instance each (instances idle 60 s are dropped).
# Install first with bench/peers/setup.sh serverless.
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

NAME=serverless-offline
usage() { die "usage: $0 start <port> <node|python> | stop <port>"; }

start() {
    local port="$1" runtime="$2" function
    valid_port "$port"
    case "$runtime" in
    node) function=lambent-bench-bench-echo-node ;;
    python) function=lambent-bench-bench-echo-python ;;
    *) usage ;;
    esac
    [[ -x "$SERVERLESS_BIN" ]] || die "serverless is not installed in $PEERS_DIR; run bench/peers/setup.sh serverless"
    # serverless-offline runs `python3` (from the runtime name) through a
    # shell. Put the real interpreter's directory first on PATH, so that a
    # version manager's shim (pyenv's costs ~50 ms a start) is not in the cold
    # start; LAMBENT_BENCH_PYTHON picks another interpreter.
    local python="${LAMBENT_BENCH_PYTHON:-python3}" python_exe path="$PATH"
    if python_exe="$("$python" -c 'import sys; print(sys.executable)' 2>/dev/null)" && [[ -x "$python_exe" ]]; then
        [[ "$(basename "$python_exe")" == python3 ]] ||
            die "the interpreter $python_exe is not named python3; serverless-offline runs 'python3'"
        path="$(dirname "$python_exe"):$PATH"
        log "$NAME: python3 for echo-python is $python_exe"
    elif [[ "$runtime" == python ]]; then
        die "$python is not a working Python on PATH (serverless-offline runs 'python3' for python3.x functions)"
    fi

    local t0
    t0="$(now)"
    # No account, no dashboard, no telemetry or update checks; only the Lambda
    # endpoint is started (the service has no http/websocket/alb events).
    peer_launch "$NAME" "$port" "$PEERS_SCRIPT_DIR/serverless" \
        env PATH="$path" PYTHONDONTWRITEBYTECODE=1 SLS_TELEMETRY_DISABLED=1 SLS_NOTIFICATIONS_MODE=off SLS_DEPRECATION_DISABLE='*' \
        SLS_INTERACTIVE_SETUP_DISABLE=1 CI=1 \
        "$SERVERLESS_BIN" offline start --host 127.0.0.1 --lambdaPort "$port" --noSponsor

    # Ready when the Lambda endpoint answers HTTP (GET / is a 404 from hapi).
    local deadline code
    deadline=$(($(date +%s) + PEER_START_TIMEOUT))
    while :; do
        peer_alive || peer_fail "$NAME" "$port" "$NAME exited before answering on port $port"
        code="$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$port/" || true)"
        [[ "$code" =~ ^[1-5][0-9][0-9]$ ]] && break
        (($(date +%s) < deadline)) || peer_fail "$NAME" "$port" "$NAME did not answer on port $port within $PEER_START_TIMEOUT s"
        sleep 0.1
    done
    log "$NAME: answering on port $port after $(elapsed "$t0") s (log: $PEER_LOG)"
    peer_warmup "$NAME" "$port" "$function"
    print_endpoint "$port" "$function"
}

case "${1:-}" in
start)
    [[ $# -eq 3 ]] || usage
    start "$2" "$3"
    ;;
stop)
    [[ $# -ge 2 ]] || usage
    valid_port "$2"
    peer_stop "$NAME" "$2"
    ;;
*) usage ;;
esac
