"""Function URL throughput and latency with wrk (issue 10, item 5).

Starts a release `lambent serve` (sandboxed, default network), creates the Rust echo
function with a public (AuthType NONE) function URL, and runs `wrk --latency` against the
URL's path-based address at 1, 8 and 64 connections, 10 s each. Writes
bench/results/function-url.json. Needs root, wrk (`apt-get install wrk`) and a release build:

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
        url = lam.create_function_url_config(FunctionName="urlbench", AuthType="NONE")["FunctionUrl"]
        lam.add_permission(FunctionName="urlbench", StatementId="public", Action="lambda:InvokeFunctionUrl",
                           Principal="*", FunctionUrlAuthType="NONE")
        parsed = urlparse(url)
        # *.localhost names do not resolve through glibc: the path-based address.
        target = f"http://127.0.0.1:{parsed.port}/{parsed.hostname.split('.')[0]}/"
        time.sleep(1)
        results = {}
        for conns in (1, 8, 64):
            cmd = ["wrk", f"-t{min(2, conns)}", f"-c{conns}", "-d10s", "--latency", target]
            text = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            results[f"c{conns}"] = {"command": " ".join(cmd), **parse(text)}
            print(conns, results[f"c{conns}"], flush=True)
    finally:
        srv.terminate()
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    doc = {"scenario": "function-url-wrk", "commit": commit, "function": "Rust echo (lambda_runtime), 128 MB",
           "sandbox": "namespaces, default network", "results": results}
    (REPO / "bench" / "results" / "function-url.json").write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
