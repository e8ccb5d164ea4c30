"""HTTP-in throughput and latency with wrk (issue 10, item 5): function URLs (BUFFERED and
RESPONSE_STREAM) and an HTTP API, in front of one trivial function.

Starts a release `lambent serve` (sandboxed, default network), creates the Rust echo
function with a public (AuthType NONE) function URL, a second public URL in RESPONSE_STREAM
mode on an alias, and an HTTP API (quick create: payload 2.0, `$default` stage), then runs
`wrk --latency` against each path-based address at 1, 8 and 64 connections, 10 s each.
Writes bench/results/function-url.json. Needs root, wrk (`apt-get install wrk`) and a
release build:

    cargo build --release -p lambent -p lambent-testfn-echo
    sudo .venv/bin/python bench/function_url_wrk.py [--bin target/release/lambent]
"""

from __future__ import annotations

import argparse
import io
import json
import re
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from urllib.parse import urlparse

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "e2e"))


def echo_zip(binary: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        info = zipfile.ZipInfo("bootstrap")
        info.external_attr = 0o755 << 16
        z.writestr(info, binary.read_bytes())
    return buf.getvalue()


def parse(text: str) -> dict:
    def ms(value: str, unit: str) -> float:
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    out = {"requests_per_second": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))}
    for pct in ("50", "90", "99"):
        m = re.search(rf"\s{pct}%\s+([\d.]+)(us|ms|s)", text)
        out[f"p{pct}_ms"] = ms(m.group(1), m.group(2))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    out["non_2xx"] = int(errors.group(1)) if errors else 0
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(REPO / "target" / "release" / "lambent"))
    args = ap.parse_args()
    binary = Path(args.bin)
    import os

    os.environ["LAMBENT_BIN"] = str(binary)
    import helpers as h

    work = Path(tempfile.mkdtemp(prefix="lambent-url-bench-"))
    srv = h.start_server(work / "data", work / "server.log", ["--sandbox", "namespaces"])
    try:
        lam = srv.client()
        lam.create_function(
            FunctionName="urlbench", Runtime="provided.al2023", Handler="bootstrap", Role=h.ROLE,
            Code={"ZipFile": echo_zip(binary.parent / "bootstrap")}, MemorySize=128,
        )
        lam.add_permission(FunctionName="urlbench", StatementId="public", Action="lambda:InvokeFunctionUrl",
                           Principal="*", FunctionUrlAuthType="NONE")
        version = lam.publish_version(FunctionName="urlbench")["Version"]
        lam.create_alias(FunctionName="urlbench", Name="stream", FunctionVersion=version)
        lam.add_permission(FunctionName="urlbench", Qualifier="stream", StatementId="public",
                           Action="lambda:InvokeFunctionUrl", Principal="*", FunctionUrlAuthType="NONE")

        def path_based(url: str) -> str:
            # *.localhost names do not resolve through glibc: the path-based address.
            parsed = urlparse(url)
            return f"http://127.0.0.1:{parsed.port}/{parsed.hostname.split('.')[0]}/"

        buffered = lam.create_function_url_config(FunctionName="urlbench", AuthType="NONE")["FunctionUrl"]
        streamed = lam.create_function_url_config(
            FunctionName="urlbench", Qualifier="stream", AuthType="NONE", InvokeMode="RESPONSE_STREAM"
        )["FunctionUrl"]
        created = subprocess.run(
            [str(binary), "api", "create", "bench", "--target", "urlbench", "--output", "json",
             "--data-dir", str(srv.data_dir)],
            capture_output=True, text=True, check=True,
        )
        api_id = json.loads(created.stdout)["ApiId"]
        targets = {
            "function-url": path_based(buffered),
            "function-url-stream": path_based(streamed),
            "http-api": f"http://127.0.0.1:{srv.url_port}/{api_id}/",
        }
        time.sleep(1)
        results = {}
        for front, target in targets.items():
            for conns in (1, 8, 64):
                cmd = ["wrk", f"-t{min(2, conns)}", f"-c{conns}", "-d10s", "--latency", target]
                text = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
                key = f"{front}/c{conns}"
                results[key] = {"command": " ".join(cmd), **parse(text)}
                print(key, results[key], flush=True)
    finally:
        srv.terminate()
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    doc = {"scenario": "http-in-wrk", "commit": commit, "function": "Rust echo (lambda_runtime), 128 MB",
           "sandbox": "namespaces, default network", "results": results}
    (REPO / "bench" / "results" / "function-url.json").write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
