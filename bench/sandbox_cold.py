#!/usr/bin/env python3
"""Cold starts with and without the sandbox, side by side.

Starts `lambent serve` once per sandbox mode (`namespaces` with each network
mode, then `none`), and for each runtime forces a new execution environment
per invoke (a configuration change makes a new revision), measuring:

- client: the Invoke round trip seen by boto3 (cold start + trivial handler);
- sandbox: the platform preparing the environment (cgroups, network namespace
  and Runtime API listener), from the server's `environment started` line;
- spawn: starting the sandbox init until the runtime's exec succeeded
  (namespaces, root, pivot, uid, seccomp);
- init: the runtime's own start until its first /next (REPORT Init Duration).

    sudo .venv/bin/python bench/sandbox_cold.py [--iterations 30] [--bin target/release/lambent]

Writes bench/results/sandbox-cold.json and prints a table. Needs root (the
sandbox does), boto3, and the Rust test function (target/*/bootstrap).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import boto3
from botocore.config import Config

REPO = Path(__file__).resolve().parent.parent
ANSI = re.compile(r"\x1b\[[0-9;]*m")
STARTED_ANY_ORDER = re.compile(r"(\w+)=(\S+)")


def zip_of(files: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in files.items():
            if isinstance(content, tuple):
                info = zipfile.ZipInfo(name)
                info.external_attr = (content[1] | 0o100000) << 16
                zf.writestr(info, content[0])
            else:
                zf.writestr(name, content)
    return buf.getvalue()


def functions(bootstrap: Path) -> list[tuple[str, str, str, bytes]]:
    return [
        ("provided", "provided.al2023", "bootstrap", zip_of({"bootstrap": (bootstrap.read_bytes(), 0o755)})),
        ("python", "python3.12", "app.handler", zip_of({"app.py": "def handler(event, context):\n    return {'ok': 1}\n"})),
        ("node", "nodejs20.x", "index.handler", zip_of({"index.js": "exports.handler = async () => ({ok: 1});\n"})),
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def summary(values: list[float]) -> dict:
    if not values:
        return {}
    return {
        "p50": round(statistics.median(values), 2),
        "p90": round(pct(values, 90), 2),
        "p99": round(pct(values, 99), 2),
        "max": round(max(values), 2),
        "n": len(values),
    }


def run_mode(binary: Path, bootstrap: Path, mode: str, network: str | None, iterations: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="lambent-bench-"))
    port = free_port()
    log_path = work / "server.log"
    args = [str(binary), "serve", "--data-dir", str(work / "data"), "--listen", f"127.0.0.1:{port}",
            "--http-listen", f"127.0.0.1:{free_port()}", "--no-auth", "--sandbox", mode, "--bridge-name", f"lbb{port}", "--bridge-subnet", "10.251.0.0/16"]
    if network:
        args += ["--default-network", network]
    env = dict(os.environ, LAMBENT_LOG="lambent_worker=debug,info", NO_COLOR="1")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=log, env=env)
    try:
        deadline = time.monotonic() + 30
        while f"listening on http://127.0.0.1:{port}" not in log_path.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"server did not start:\n{log_path.read_text(errors='replace')}")
            time.sleep(0.05)
        lam = boto3.client(
            "lambda", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
            aws_access_key_id="bench", aws_secret_access_key="bench",
            config=Config(retries={"max_attempts": 0}, read_timeout=60),
        )
        results = {}
        for kind, runtime, handler, code in functions(bootstrap):
            name = f"cold-{kind}"
            lam.create_function(FunctionName=name, Runtime=runtime, Handler=handler,
                                Role="arn:aws:iam::000000000000:role/bench", Code={"ZipFile": code})
            client_ms, init_ms = [], []
            for i in range(iterations + 1):
                lam.update_function_configuration(FunctionName=name, Environment={"Variables": {"BENCH_ROUND": str(i)}})
                begun = time.perf_counter()
                resp = lam.invoke(FunctionName=name, Payload=b"{}", LogType="Tail")
                elapsed = (time.perf_counter() - begun) * 1000
                resp["Payload"].read()
                if "FunctionError" in resp:
                    raise SystemExit(f"{kind} failed in mode {mode}")
                if i == 0:
                    continue  # the first start also warms the host's page cache
                client_ms.append(elapsed)
                tail = base64.b64decode(resp.get("LogResult", "")).decode(errors="replace")
                found = re.search(r"Init Duration: ([\d.]+) ms", tail)
                if found:
                    init_ms.append(float(found.group(1)))
            lines = [ANSI.sub("", l) for l in log_path.read_text(errors="replace").splitlines()
                     if "environment started" in l]
            sandbox_ms, spawn_ms = [], []
            for line in lines:
                fields = dict(STARTED_ANY_ORDER.findall(line))
                if fields.get("function") != name:
                    continue
                sandbox_ms.append(int(fields["sandbox_us"]) / 1000)
                spawn_ms.append(int(fields["spawn_us"]) / 1000)
            results[kind] = {
                "client_ms": summary(client_ms),
                "sandbox_ms": summary(sandbox_ms[1:]),
                "spawn_ms": summary(spawn_ms[1:]),
                "platform_ms": summary([a + b for a, b in zip(sandbox_ms[1:], spawn_ms[1:])]),
                "runtime_init_ms": summary(init_ms),
            }
        return results
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--bin", type=Path, default=REPO / "target/release/lambent")
    parser.add_argument("--bootstrap", type=Path, default=None)
    args = parser.parse_args()
    bootstrap = args.bootstrap or next(
        (p for p in [args.bin.parent / "bootstrap", REPO / "target/debug/bootstrap"] if p.is_file()), None)
    if bootstrap is None or not args.bin.is_file():
        raise SystemExit("build first: cargo build --release -p lambent -p lambent-testfn-echo")
    modes = [("namespaces", "none"), ("namespaces", "bridge"), ("none", None)]
    report = {
        "scenario": "sandbox-cold",
        "machine": {"cpus": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version()},
        "commit": subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                 capture_output=True, text=True).stdout.strip(),
        "binary": str(args.bin),
        "iterations": args.iterations,
        "modes": {},
    }
    for mode, network in modes:
        label = f"{mode}/{network}" if network else mode
        print(f"measuring {label} ...", file=sys.stderr)
        report["modes"][label] = run_mode(args.bin, bootstrap, mode, network, args.iterations)
    out = REPO / "bench/results/sandbox-cold.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'mode':22} {'runtime':9} {'client p50':>11} {'platform p50':>13} {'sandbox p50':>12} {'spawn p50':>10} {'init p50':>9}")
    for label, runtimes in report["modes"].items():
        for kind, r in runtimes.items():
            print(f"{label:22} {kind:9} {r['client_ms'].get('p50', 0):>9.2f}ms {r['platform_ms'].get('p50', 0):>11.2f}ms"
                  f" {r['sandbox_ms'].get('p50', 0):>10.2f}ms {r['spawn_ms'].get('p50', 0):>8.2f}ms {r['runtime_init_ms'].get('p50', 0):>7.2f}ms")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
