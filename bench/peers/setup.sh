#!/usr/bin/env bash
# Installs the benchmark peers into $LAMBENT_BENCH_PEERS (default
# /var/cache/lambent-bench-peers), outside the repository. Idempotent: a peer
# already installed at the pinned version is left alone.
#
#   bench/peers/setup.sh [all|cargo-lambda|serverless]
#
# cargo-lambda: `cargo install cargo-lambda --locked` from crates.io (about
#   30 min on 2 cores the first time; the build directory is kept in
#   $LAMBENT_BENCH_PEERS/cargo-lambda-build until it succeeds, so an
#   interrupted build resumes, and is removed after).
# serverless: `npm ci` of bench/peers/npm/package-lock.json (serverless@3 and
#   serverless-offline@13; about 1 min).
# Also checks that node (>= 20) and python3 are there for the serverless
# handlers. Exits non-zero, saying why, if a peer cannot be installed.
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

what="${1:-all}"
case "$what" in
all | cargo-lambda | serverless) ;;
*) die "usage: $0 [all|cargo-lambda|serverless]" ;;
esac

mkdir -p "$PEERS_DIR/logs" || die "cannot create $PEERS_DIR (set LAMBENT_BENCH_PEERS to a writable directory)"
log "peers directory: $PEERS_DIR"

setup_cargo_lambda() {
    command -v cargo >/dev/null || die "cargo-lambda: cargo is not on PATH"
    if [[ -x "$CARGO_LAMBDA_BIN" ]] &&
        "$CARGO_LAMBDA_BIN" lambda --version 2>/dev/null | grep -q " $CARGO_LAMBDA_VERSION\b"; then
        log "cargo-lambda $CARGO_LAMBDA_VERSION: already installed ($CARGO_LAMBDA_BIN), nothing to do"
        rm -rf "$PEERS_DIR/cargo-lambda-build" # a build directory left by an earlier run
        return 0
    fi
    local logf="$PEERS_DIR/logs/cargo-lambda-install.log" t0
    t0="$(now)"
    log "cargo-lambda $CARGO_LAMBDA_VERSION: building from crates.io (long: about 30 min on 2 cores); progress in $logf"
    if ! CARGO_TARGET_DIR="$PEERS_DIR/cargo-lambda-build" \
        cargo install cargo-lambda --version "$CARGO_LAMBDA_VERSION" --locked \
        --root "$PEERS_DIR/cargo-lambda" >"$logf" 2>&1; then
        tail -n 30 "$logf" >&2
        die "cargo-lambda: 'cargo install cargo-lambda --version $CARGO_LAMBDA_VERSION --locked' failed after $(elapsed "$t0") s (full log: $logf)"
    fi
    "$CARGO_LAMBDA_BIN" lambda --version >/dev/null 2>&1 ||
        die "cargo-lambda: installed, but '$CARGO_LAMBDA_BIN lambda --version' fails"
    rm -rf "$PEERS_DIR/cargo-lambda-build"
    log "cargo-lambda $CARGO_LAMBDA_VERSION: installed in $(elapsed "$t0") s ($CARGO_LAMBDA_BIN)"
}

installed_npm_version() { # package name -> version installed in the cache, or nothing
    local f="$PEERS_DIR/serverless/node_modules/$1/package.json"
    if [[ -f "$f" ]]; then node -p "require('$f').version" 2>/dev/null || true; fi
}

setup_serverless() {
    command -v node >/dev/null || die "serverless: node is not on PATH (Node >= 20 is needed)"
    command -v npm >/dev/null || die "serverless: npm is not on PATH"
    local major
    major="$(node -p 'process.versions.node.split(".")[0]')"
    ((major >= 20)) || die "serverless: Node $(node --version) is too old; the echo-node function is nodejs20.x (need >= 20)"
    if command -v python3 >/dev/null; then
        log "serverless: python3 for echo-python is $(command -v python3) ($(python3 --version 2>&1))"
    else
        die "serverless: python3 is not on PATH; serverless-offline runs the echo-python handler with it"
    fi
    if [[ "$(installed_npm_version serverless)" == "$SERVERLESS_VERSION" &&
        "$(installed_npm_version serverless-offline)" == "$SERVERLESS_OFFLINE_VERSION" ]] &&
        cmp -s "$PEERS_SCRIPT_DIR/npm/package-lock.json" "$PEERS_DIR/serverless/package-lock.json"; then
        log "serverless $SERVERLESS_VERSION + serverless-offline $SERVERLESS_OFFLINE_VERSION: already installed, nothing to do"
        return 0
    fi
    local logf="$PEERS_DIR/logs/serverless-install.log" t0
    t0="$(now)"
    mkdir -p "$PEERS_DIR/serverless"
    cp "$PEERS_SCRIPT_DIR/npm/package.json" "$PEERS_SCRIPT_DIR/npm/package-lock.json" "$PEERS_DIR/serverless/"
    log "serverless $SERVERLESS_VERSION + serverless-offline $SERVERLESS_OFFLINE_VERSION: npm ci in $PEERS_DIR/serverless; log in $logf"
    if ! (cd "$PEERS_DIR/serverless" && npm ci --no-audit --no-fund >"$logf" 2>&1); then
        tail -n 30 "$logf" >&2
        die "serverless: 'npm ci' failed after $(elapsed "$t0") s (full log: $logf)"
    fi
    [[ -x "$SERVERLESS_BIN" ]] || die "serverless: npm ci succeeded but $SERVERLESS_BIN is missing"
    [[ "$(installed_npm_version serverless)" == "$SERVERLESS_VERSION" ]] ||
        die "serverless: installed version $(installed_npm_version serverless), expected $SERVERLESS_VERSION"
    [[ "$(installed_npm_version serverless-offline)" == "$SERVERLESS_OFFLINE_VERSION" ]] ||
        die "serverless-offline: installed version $(installed_npm_version serverless-offline), expected $SERVERLESS_OFFLINE_VERSION"
    log "serverless $SERVERLESS_VERSION + serverless-offline $SERVERLESS_OFFLINE_VERSION: installed in $(elapsed "$t0") s"
}

case "$what" in
all)
    setup_serverless
    setup_cargo_lambda
    ;;
cargo-lambda) setup_cargo_lambda ;;
serverless) setup_serverless ;;
esac
log "done: $what"
