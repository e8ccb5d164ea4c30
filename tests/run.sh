#!/usr/bin/env bash
# Runs every test of the project: formatting, lints, the Rust unit and
# integration tests, then the end-to-end suite (pytest, tests/e2e) against a
# real `lambent serve` with real clients (boto3, the AWS CLI, awslambdaric,
# the Rust lambda_runtime crate).
#
#   bash tests/run.sh            # from anywhere; works on a fresh clone
#
# Environment:
#   CARGO_TARGET_DIR          honoured (binaries are looked up through cargo metadata)
#   LAMBENT_TEST_VENV         virtualenv for the e2e clients (default: <repo>/.venv)
#   LAMBENT_TEST_VENV_PYTHON  interpreter that creates it (default: python3.11, else python3 >= 3.10)
#   LAMBENT_TEST_PKG_CACHE    npm/PyPI packages of the web-adapter tests, fetched on first use
#                             (default: ~/.cache/lambent-e2e-packages; needs npm and the registries)
#   PYTEST_ARGS               extra arguments for pytest (e.g. "-k invoke -x")
#   LAMBENT_TEST_AWS_CLI      an `aws` (e.g. v2) to use instead of the pinned awscli v1
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

step() { printf '\n==> %s\n' "$*"; }

# What the tests need from the host, set up when missing (root): the sandbox's bridge
# networking uses iproute2 and nftables; the async-destination and event-source tests use
# the machine's RabbitMQ, NATS with JetStream, Mosquitto and Redis.
if ! command -v nft >/dev/null 2>&1 || ! command -v ip >/dev/null 2>&1; then
    step "installing iproute2 and nftables"
    apt-get update -qq && apt-get install -y -qq iproute2 nftables >/dev/null
fi
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {
    for _ in $(seq 1 60); do port_open "$1" && return 0; sleep 1; done
    echo "error: nothing listens on 127.0.0.1:$1 after starting $2" >&2
    return 1
}
if ! port_open 5672; then
    step "starting RabbitMQ"
    rabbitmq-server -detached
    wait_port 5672 RabbitMQ
fi
if ! port_open 4222; then
    step "starting NATS with JetStream"
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
        -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
    wait_port 4222 NATS
fi
if ! port_open 1883; then
    step "starting Mosquitto"
    mosquitto -d -c /etc/mosquitto/mosquitto.conf
    wait_port 1883 Mosquitto
fi
if ! port_open 6379; then
    step "starting Redis"
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log
    wait_port 6379 Redis
fi

step "cargo fmt --all --check"
cargo fmt --all --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo build --workspace"
cargo build --workspace

# Where cargo put the binaries (CARGO_TARGET_DIR, .cargo/config, or ./target);
# exported before `cargo test` too, for Rust tests that start the server.
target_dir="$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
if [[ -z "$target_dir" ]]; then
    target_dir="${CARGO_TARGET_DIR:-$repo/target}"
fi
export LAMBENT_BIN="$target_dir/debug/lambent"
export LAMBENT_TEST_RUST_BOOTSTRAP="$target_dir/debug/bootstrap"
export LAMBENT_TEST_PROBE="$target_dir/debug/probe"
export LAMBENT_TEST_HTTP_ECHO="$target_dir/debug/http-echo"
for bin in "$LAMBENT_BIN" "$LAMBENT_TEST_RUST_BOOTSTRAP" "$LAMBENT_TEST_PROBE" "$LAMBENT_TEST_HTTP_ECHO"; do
    if [[ ! -x "$bin" ]]; then
        echo "error: $bin was not built" >&2
        exit 1
    fi
done

step "cargo test --workspace"
cargo test --workspace

step "python environment for the end-to-end suite"
venv="${LAMBENT_TEST_VENV:-$repo/.venv}"
requirements="$repo/tests/e2e/requirements.txt"

pick_python() {
    local candidate
    for candidate in "${LAMBENT_TEST_VENV_PYTHON:-}" python3.11 python3; do
        [[ -n "$candidate" ]] || continue
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys, venv; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    echo "error: no python >= 3.10 with the venv module found (set LAMBENT_TEST_VENV_PYTHON)" >&2
    return 1
}

# The stamp records what was installed; a missing or different stamp, or a
# venv whose interpreter no longer starts, means (re)installing.
stamp="$venv/.lambent-requirements"
wanted="$(cat "$requirements")"
if [[ -x "$venv/bin/python" ]] && ! "$venv/bin/python" -c 'import sys' 2>/dev/null; then
    echo "virtualenv at $venv is broken; recreating it"
    if [[ -f "$venv/pyvenv.cfg" ]]; then rm -rf "$venv"; fi
fi
if [[ ! -x "$venv/bin/python" ]]; then
    python="$(pick_python)"
    echo "creating virtualenv $venv with $python ($("$python" --version 2>&1))"
    "$python" -m venv "$venv"
fi
if [[ "$(cat "$stamp" 2>/dev/null || true)" != "$wanted" ]] ||
    ! "$venv/bin/python" -c 'import boto3, awscli, awslambdaric, pytest, requests' 2>/dev/null; then
    echo "installing $(grep -v '^#' "$requirements" | tr '\n' ' ')"
    pip_log="$(mktemp)"
    if ! "$venv/bin/python" -m pip install --disable-pip-version-check --no-input \
        -r "$requirements" >"$pip_log" 2>&1; then
        cat "$pip_log" >&2
        rm -f "$pip_log"
        echo "error: pip install failed" >&2
        exit 1
    fi
    # progress lines only
    grep -E '^(Collecting|Successfully installed|Requirement already satisfied: (boto3|awscli|awslambdaric|pytest)[=<> ])' \
        "$pip_log" || true
    rm -f "$pip_log"
    printf '%s' "$wanted" >"$stamp"
else
    echo "virtualenv $venv is up to date ($("$venv/bin/python" --version 2>&1))"
fi

step "end-to-end suite (pytest tests/e2e)"
# shellcheck disable=SC2086 # PYTEST_ARGS is meant to be split
"$venv/bin/python" -m pytest "$repo/tests/e2e" -q --durations=10 ${PYTEST_ARGS:-}

step "benchmark harness smoke run (lambent-bench --smoke all; figures are not checked)"
# A few hundred invokes per scenario so the harness cannot rot; results go to a temp dir.
"$target_dir/debug/lambent-bench" --smoke --server-bin "$LAMBENT_BIN" \
    --echo-bin "$LAMBENT_TEST_RUST_BOOTSTRAP" all
