"""Shared helpers for Lambent's end-to-end suite: zips, test functions,
server process management and small assertions.

Nothing here talks to a mock: every function is deployed to the real
`lambent serve` binary started by conftest.py.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

REPO = Path(__file__).resolve().parents[2]
ACCOUNT = "000000000000"
REGION = "us-east-1"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/lambent-e2e"
LAST_MODIFIED_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+0000$")

# Every function process the suite starts records "<pid>.pid" (holding its
# start time from /proc/self/stat) here, so the shutdown test can prove that
# the server left none of them running.  The directory is given to functions
# both through their Environment (LAMBENT_TEST_PID_DIR) and baked into the
# generated code, so functions deployed without an Environment are tracked.
PID_DIR_OWNED = not os.environ.get("LAMBENT_TEST_PID_DIR")
PID_DIR = Path(os.environ.get("LAMBENT_TEST_PID_DIR") or tempfile.mkdtemp(prefix="lambent-e2e-pids-"))
PID_DIR.mkdir(parents=True, exist_ok=True)
os.environ["LAMBENT_TEST_PID_DIR"] = str(PID_DIR)

# Scratch space for marker files written by functions (async invokes etc.).
SCRATCH = Path(tempfile.mkdtemp(prefix="lambent-e2e-scratch-"))


def _default_target_dir() -> Path:
    env = os.environ.get("CARGO_TARGET_DIR")
    if env:
        p = Path(env)
        return p if p.is_absolute() else REPO / p
    return REPO / "target"


def lambent_bin() -> Path:
    return Path(os.environ.get("LAMBENT_BIN") or _default_target_dir() / "debug" / "lambent")


def rust_bootstrap() -> Path:
    return Path(os.environ.get("LAMBENT_TEST_RUST_BOOTSTRAP") or _default_target_dir() / "debug" / "bootstrap")


def uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def scratch_path(prefix: str) -> Path:
    return SCRATCH / f"{prefix}-{uuid.uuid4().hex}"


# --------------------------------------------------------------------------
# zips


def make_zip(files: dict, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    """Build a zip in memory.

    `files` maps an entry name to its content (str or bytes, mode 0644), or to
    a tuple `(content, mode)`; a mode with the S_IFLNK bit makes a symlink
    whose target is `content`.
    """
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, spec in files.items():
            if isinstance(spec, tuple):
                content, mode = spec
            else:
                content, mode = spec, 0o644
            if isinstance(content, str):
                content = content.encode()
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.create_system = 3  # Unix, so external_attr holds st_mode
            if not stat.S_IFMT(mode):
                mode |= stat.S_IFREG
            info.external_attr = (mode & 0xFFFF) << 16
            info.compress_type = compression
            zf.writestr(info, content)
    return buf.getvalue()


def sha256_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def zip_bomb(entry_mib: int = 300, lie_about_size: bool = False) -> bytes:
    """A small zip whose one big entry expands to `entry_mib` MiB of zeros.

    With `lie_about_size`, the local header and central directory claim the
    entry is only 1000 bytes, so only a server that bounds what it actually
    inflates (not what the headers say) notices.
    """
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr("app.py", "def handler(event, context):\n    return 1\n")
        with zf.open("zeros.bin", "w") as f:
            chunk = bytes(1 << 20)
            for _ in range(entry_mib):
                f.write(chunk)
    data = bytearray(buf.getvalue())
    if lie_about_size:
        info = zipfile.ZipFile(io.BytesIO(bytes(data))).getinfo("zeros.bin")
        lho = info.header_offset
        assert data[lho : lho + 4] == b"PK\x03\x04"
        struct.pack_into("<I", data, lho + 22, 1000)
        cd = data.rfind(b"PK\x01\x02")  # zeros.bin is the last entry
        assert data[cd + 46 : cd + 46 + len(b"zeros.bin")] == b"zeros.bin"
        struct.pack_into("<I", data, cd + 24, 1000)
        # the lie must survive a round trip through a zip reader
        assert zipfile.ZipFile(io.BytesIO(bytes(data))).getinfo("zeros.bin").file_size == 1000
    return bytes(data)


# --------------------------------------------------------------------------
# test function sources

PY_PID_SNIPPET = """
import os as _os

def _lambent_record_pid():
    d = _os.environ.get("LAMBENT_TEST_PID_DIR") or {pid_dir!r}
    with open("/proc/self/stat") as f:
        start = f.read().rsplit(")", 1)[1].split()[19]
    with open(_os.path.join(d, "%d.pid" % _os.getpid()), "w") as f:
        f.write(start)

_lambent_record_pid()
"""

PY_PROBE = '''
import json, os, sys, time
{pid_snippet}
VERSION = {version!r}
COUNT = 0


def handler(event, context):
    global COUNT
    COUNT += 1
    ev = event if isinstance(event, dict) else {{}}
    if ev.get("pidfile"):
        with open("/proc/self/stat") as f:
            start = f.read().rsplit(")", 1)[1].split()[19]
        with open(ev["pidfile"], "w") as f:
            f.write("%d %s" % (os.getpid(), start))
    if ev.get("print"):
        print(ev["print"], flush=True)
    child = None
    if ev.get("spawn"):
        # a background process of the function's own (same process group)
        import subprocess
        p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        with open("/proc/%d/stat" % p.pid) as f:
            start = f.read().rsplit(")", 1)[1].split()[19]
        d = os.environ.get("LAMBENT_TEST_PID_DIR") or {pid_dir!r}
        with open(os.path.join(d, "%d.pid" % p.pid), "w") as f:
            f.write(start)
        child = p.pid
    if ev.get("sleep"):
        time.sleep(ev["sleep"])
    if ev.get("marker"):
        with open(ev["marker"], "w") as f:
            f.write(context.aws_request_id)
    if ev.get("raise"):
        raise ValueError(ev["raise"])
    if ev.get("exit") is not None:
        sys.stdout.flush()
        os._exit(ev["exit"])
    if ev.get("big"):
        return "x" * ev["big"]
    if ev.get("quiet"):
        return {{"event_bytes": len(json.dumps(event))}}
    task_root = os.environ.get("LAMBDA_TASK_ROOT", "")
    return {{
        "runtime": "python",
        "version": VERSION,
        "event": event,
        "count": COUNT,
        "pid": os.getpid(),
        "child": child,
        "request_id": context.aws_request_id,
        "function_name": context.function_name,
        "function_version": context.function_version,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "invoked_function_arn": context.invoked_function_arn,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "env": dict(os.environ),
        "cwd": os.getcwd(),
        "handler_in_task_root": os.path.isfile(os.path.join(task_root, "app.py")),
    }}
'''


def py_probe_zip(version: str = "v1") -> bytes:
    snippet = PY_PID_SNIPPET.format(pid_dir=str(PID_DIR))
    return make_zip({"app.py": PY_PROBE.format(pid_snippet=snippet, version=version, pid_dir=str(PID_DIR))})


JS_PID_SNIPPET = """
(function lambentRecordPid() {{
  const fs = require('fs');
  const path = require('path');
  const dir = process.env.LAMBENT_TEST_PID_DIR || {pid_dir};
  const st = fs.readFileSync('/proc/self/stat', 'utf8');
  const start = st.slice(st.lastIndexOf(')') + 2).split(' ')[19];
  fs.writeFileSync(path.join(dir, process.pid + '.pid'), start);
}})();
"""

JS_BODY = """
let count = 0;

function result(flavor, event, context) {{
  return {{
    runtime: 'node',
    flavor,
    version: {version},
    event,
    count,
    pid: process.pid,
    request_id: context.awsRequestId,
    function_name: context.functionName,
    function_version: context.functionVersion,
    memory_limit_in_mb: context.memoryLimitInMB,
    invoked_function_arn: context.invokedFunctionArn,
    remaining_ms: context.getRemainingTimeInMillis(),
    env: process.env,
    cwd: process.cwd(),
  }};
}}

async function before(ev, context) {{
  const fs = require('fs');
  if (ev.print) console.log(ev.print);
  if (ev.sleep) await new Promise((r) => setTimeout(r, ev.sleep * 1000));
  if (ev.marker) fs.writeFileSync(ev.marker, context.awsRequestId);
  if (ev.exit !== undefined) process.exit(ev.exit);
}}
"""

JS_CJS = JS_PID_SNIPPET + JS_BODY + """
exports.handler = async (event, context) => {{
  count += 1;
  const ev = event && typeof event === 'object' ? event : {{}};
  await before(ev, context);
  if (ev.raise) throw new Error(ev.raise);
  return result('cjs', event, context);
}};
"""

JS_CALLBACK = JS_PID_SNIPPET + JS_BODY + """
exports.handler = function (event, context, callback) {{
  count += 1;
  const ev = event && typeof event === 'object' ? event : {{}};
  before(ev, context).then(() => {{
    setTimeout(() => {{
      if (ev.raise) callback(new Error(ev.raise));
      else callback(null, result('callback', event, context));
    }}, 5);
  }});
}};
"""

JS_ESM = """
import {{ createRequire }} from 'node:module';
const require = createRequire(import.meta.url);
""" + JS_PID_SNIPPET + JS_BODY + """
export const handler = async (event, context) => {{
  count += 1;
  const ev = event && typeof event === 'object' ? event : {{}};
  await before(ev, context);
  if (ev.raise) throw new Error(ev.raise);
  return result('esm', event, context);
}};
"""


def _js(src: str, version: str) -> str:
    return src.format(pid_dir=json.dumps(str(PID_DIR)), version=json.dumps(version))


def node_cjs_zip(version: str = "v1") -> bytes:
    return make_zip({"index.js": _js(JS_CJS, version)})


def node_esm_zip(version: str = "v1") -> bytes:
    return make_zip({"index.mjs": _js(JS_ESM, version)})


def node_callback_zip(version: str = "v1") -> bytes:
    return make_zip({"cb.js": _js(JS_CALLBACK, version)})


RIC_BOOTSTRAP = """#!/bin/sh
# A custom runtime that is AWS's own Python runtime interface client.
exec "$LAMBENT_TEST_PYTHON" -m awslambdaric app.handler
"""

RIC_APP = '''
import os
{pid_snippet}

def handler(event, context):
    ev = event if isinstance(event, dict) else {{}}
    if ev.get("marker"):
        with open(ev["marker"], "w") as f:
            f.write(context.aws_request_id)
    if ev.get("raise"):
        raise ValueError(ev["raise"])
    return {{
        "ric": "awslambdaric",
        "event": event,
        "pid": os.getpid(),
        "request_id": context.aws_request_id,
        "function_name": context.function_name,
        "invoked_function_arn": context.invoked_function_arn,
        "remaining_ms": context.get_remaining_time_in_millis(),
    }}
'''


def ric_zip() -> bytes:
    snippet = PY_PID_SNIPPET.format(pid_dir=str(PID_DIR))
    return make_zip(
        {
            "bootstrap": (RIC_BOOTSTRAP, 0o755),
            "app.py": RIC_APP.format(pid_snippet=snippet),
        }
    )


def rust_zip() -> bytes:
    path = rust_bootstrap()
    if not path.is_file():
        pytest.fail(
            f"Rust test function not built: {path} is missing "
            "(run `cargo build --workspace`, or set LAMBENT_TEST_RUST_BOOTSTRAP)"
        )
    return make_zip({"bootstrap": (path.read_bytes(), 0o755)})


# --------------------------------------------------------------------------
# API helpers


def function_arn(name: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"


def create_function(lam, name: str, zip_bytes: bytes, runtime: str, handler: str, env: dict | None = None, **kw):
    """CreateFunction with the PID-tracking variable added to Environment."""
    variables = {"LAMBENT_TEST_PID_DIR": str(PID_DIR)}
    variables.update(env or {})
    resp = lam.create_function(
        FunctionName=name,
        Runtime=runtime,
        Handler=handler,
        Role=ROLE,
        Code={"ZipFile": zip_bytes},
        Environment={"Variables": variables},
        **kw,
    )
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 201, resp["ResponseMetadata"]
    return resp


def invoke(lam, name: str, payload=None, raw: bytes | None = None, **kw):
    """Invoke and return (response, decoded JSON payload or None)."""
    body = raw if raw is not None else json.dumps({} if payload is None else payload).encode()
    resp = lam.invoke(FunctionName=name, Payload=body, **kw)
    data = resp["Payload"].read()
    parsed = None
    if data:
        try:
            parsed = json.loads(data)
        except ValueError:
            parsed = data
    return resp, parsed


def invoke_ok(lam, name: str, payload=None, **kw):
    resp, body = invoke(lam, name, payload, **kw)
    assert resp["StatusCode"] == 200, resp
    assert "FunctionError" not in resp, f"unexpected function error: {body!r}"
    assert isinstance(body, dict), body
    return resp, body


def request_id(resp) -> str:
    return resp["ResponseMetadata"]["RequestId"]


@dataclass
class AwsError:
    code: str
    status: int
    message: str
    headers: dict


def aws_error(exc: ClientError) -> AwsError:
    err = exc.response.get("Error", {})
    meta = exc.response.get("ResponseMetadata", {})
    return AwsError(
        code=err.get("Code", ""),
        status=meta.get("HTTPStatusCode", 0),
        message=err.get("Message", ""),
        headers={k.lower(): v for k, v in meta.get("HTTPHeaders", {}).items()},
    )


def expect_error(fn, *args, status=None, codes=None, **kw) -> AwsError:
    """Call fn, expect a ClientError; check status/code and the error header."""
    with pytest.raises(ClientError) as info:
        fn(*args, **kw)
    err = aws_error(info.value)
    if status is not None:
        if isinstance(status, range):
            assert err.status in status, err
        else:
            assert err.status == status, err
    if codes is not None:
        if isinstance(codes, str):
            codes = {codes}
        assert err.code in codes, err
    assert err.headers.get("x-amzn-errortype"), f"error response lacks x-amzn-ErrorType: {err}"
    return err


def assert_function_absent(lam, name: str):
    expect_error(lam.get_function, FunctionName=name, status=404, codes="ResourceNotFoundException")


def wait_for_file(path: Path, timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            # give the writer a moment to finish writing
            time.sleep(0.05)
            return path.read_text()
        time.sleep(0.05)
    raise AssertionError(f"{path} did not appear within {timeout}s")


# --------------------------------------------------------------------------
# processes


def proc_start_time(pid: int) -> str | None:
    """Start time of a live (non-zombie) process, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    if rest[0] in ("Z", "X"):
        return None
    return rest[19]


def is_alive(pid: int, start: str) -> bool:
    return proc_start_time(pid) == start


def recorded_pids() -> dict[int, str]:
    out = {}
    for p in PID_DIR.glob("*.pid"):
        try:
            out[int(p.stem)] = p.read_text().strip()
        except (ValueError, OSError):
            continue
    return out


def live_recorded_pids() -> dict[int, str]:
    return {pid: st for pid, st in recorded_pids().items() if st and is_alive(pid, st)}


# --------------------------------------------------------------------------
# the server


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    proc: subprocess.Popen
    port: int
    data_dir: Path
    log_path: Path
    credentials: dict = field(default_factory=dict)
    # The function URL gateway's port (`--http-listen`).
    url_port: int = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, access_key=None, secret_key=None, **config):
        cfg = dict(
            # total_max_attempts=1: one attempt, no retries (botocore's "max_attempts"
            # counts retries, so max_attempts=1 would still retry once)
            retries={"total_max_attempts": 1, "mode": "standard"},
            read_timeout=60,
            connect_timeout=5,
            max_pool_connections=20,
        )
        cfg.update(config)
        return boto3.client(
            "lambda",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=access_key or self.credentials["access_key_id"],
            aws_secret_access_key=secret_key or self.credentials["secret_access_key"],
            config=Config(**cfg),
        )

    def log_tail(self, n: int = 60) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-n:])

    def terminate(self, timeout: float = 20.0) -> int | None:
        """SIGTERM and wait; returns the exit code (None if it had to be killed)."""
        if self.proc.poll() is not None:
            return self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None


def start_server(data_dir: Path, log_path: Path, extra_args=(), startup_timeout: float = 30.0) -> Server:
    binary = lambent_bin()
    if not binary.is_file():
        pytest.fail(f"lambent binary not found at {binary} (build it with `cargo build -p lambent`, or set LAMBENT_BIN)")
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    extra_args = list(extra_args)
    if not any(a == "--sandbox" or a.startswith("--sandbox=") for a in extra_args):
        # The platform-semantics suite records function pids in a host directory, which a
        # sandbox hides: it runs unsandboxed unless LAMBENT_TEST_SANDBOX says otherwise.
        # test_sandbox.py starts its own sandboxed servers.
        extra_args += ["--sandbox", os.environ.get("LAMBENT_TEST_SANDBOX", "none")]
    url_port = free_port()
    if not any(a == "--http-listen" or a.startswith("--http-listen=") for a in extra_args):
        # Each server gets its own function URL port, never the default 9080.
        extra_args += ["--http-listen", f"127.0.0.1:{url_port}"]
    if "--bridge-name" not in extra_args:
        # Each server gets its own bridge and subnet, so servers of one run never share one.
        extra_args += ["--bridge-name", f"lbt{port}", "--bridge-subnet", f"10.{100 + port % 100}.{port // 100 % 250}.0/24"]
    log = open(log_path, "ab", buffering=0)
    proc = subprocess.Popen(
        [str(binary), "serve", "--data-dir", str(data_dir), "--listen", f"127.0.0.1:{port}", *extra_args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=log,
        start_new_session=True,
    )
    server = Server(proc=proc, port=port, data_dir=data_dir, log_path=log_path, url_port=url_port)
    listening = threading.Event()
    needle = f"listening on http://127.0.0.1:{port}".encode()

    def pump():
        for line in iter(proc.stdout.readline, b""):
            log.write(b"[stdout] " + line)
            if needle in line:
                listening.set()
        proc.stdout.close()

    threading.Thread(target=pump, name=f"lambent-stdout-{port}", daemon=True).start()
    deadline = time.monotonic() + startup_timeout
    while not listening.wait(0.05):
        if proc.poll() is not None:
            pytest.fail(f"lambent serve exited with {proc.returncode} before listening:\n{server.log_tail()}")
        if time.monotonic() > deadline:
            server.terminate(5)
            pytest.fail(f"lambent serve did not print {needle.decode()!r} within {startup_timeout}s:\n{server.log_tail()}")
    creds_path = data_dir / "credentials.json"
    while not creds_path.exists():
        if time.monotonic() > deadline:
            server.terminate(5)
            pytest.fail(f"{creds_path} was not written:\n{server.log_tail()}")
        time.sleep(0.05)
    server.credentials = json.loads(creds_path.read_text())
    # Functions need an execution role that exists: the suite's role, made by the root.
    made = subprocess.run(
        [str(binary), "--data-dir", str(data_dir), "admin", "role", "create", ROLE.rsplit("/", 1)[1]],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if made.returncode != 0 and "already exists" not in made.stderr:
        server.terminate(5)
        pytest.fail(f"lambent admin role create failed: {made.stderr}\n{server.log_tail()}")
    return server


def kill_leftovers():
    """Last-resort cleanup of recorded function processes (after the checks)."""
    for pid, st in live_recorded_pids().items():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def aws_cli_env(server: Server) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID=server.credentials["access_key_id"],
        AWS_SECRET_ACCESS_KEY=server.credentials["secret_access_key"],
        AWS_DEFAULT_REGION=REGION,
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_MAX_ATTEMPTS="1",
        AWS_PAGER="",
    )
    return env


def aws_cli_cmd() -> list[str]:
    """The AWS CLI to drive: LAMBENT_TEST_AWS_CLI (e.g. a v2 `aws`), else the
    pinned awscli (v1) installed next to this interpreter."""
    override = os.environ.get("LAMBENT_TEST_AWS_CLI")
    return [override] if override else [sys.executable, "-m", "awscli"]


_AWS_CLI_MAJOR: list[int] = []


def aws_cli_major() -> int:
    if not _AWS_CLI_MAJOR:
        out = subprocess.run([*aws_cli_cmd(), "--version"], capture_output=True, text=True, timeout=60)
        m = re.search(r"aws-cli/(\d+)\.", out.stdout + out.stderr)
        assert m, f"cannot tell the AWS CLI version: {out.stdout!r} {out.stderr!r}"
        _AWS_CLI_MAJOR.append(int(m.group(1)))
    return _AWS_CLI_MAJOR[0]


def aws_payload_args(payload: str) -> list[str]:
    """`--payload` for `aws lambda invoke`: v2 needs --cli-binary-format
    raw-in-base64-out for a raw JSON payload; v1 has no such flag and always
    sends --payload as given."""
    fmt = ["--cli-binary-format", "raw-in-base64-out"] if aws_cli_major() >= 2 else []
    return [*fmt, "--payload", payload]


def run_aws(server: Server, *args: str, timeout: float = 90.0) -> subprocess.CompletedProcess:
    cmd = [
        *aws_cli_cmd(),
        "lambda",
        *args,
        "--endpoint-url",
        server.endpoint,
        "--output",
        "json",
        "--cli-read-timeout",
        "60",
        "--cli-connect-timeout",
        "5",
    ]
    return subprocess.run(cmd, env=aws_cli_env(server), capture_output=True, text=True, timeout=timeout)


# --------------------------------------------------------------------------
# the functions most invoke tests share (created once per session)


@dataclass(frozen=True)
class Kind:
    runtime: str
    handler: str
    make_zip: object
    family: str  # python | node | rust | ric


KINDS = {
    "python": Kind("python3.12", "app.handler", py_probe_zip, "python"),
    "node-cjs": Kind("nodejs20.x", "index.handler", node_cjs_zip, "node"),
    "node-esm": Kind("nodejs22.x", "index.handler", node_esm_zip, "node"),
    "node-callback": Kind("nodejs18.x", "cb.handler", node_callback_zip, "node"),
    "rust": Kind("provided.al2023", "bootstrap", rust_zip, "rust"),
    "ric": Kind("provided.al2023", "app.handler", ric_zip, "ric"),
}

SHARED_MEMORY = 256
SHARED_TIMEOUT = 10
SHARED_ENV = {"GREETING": "hello from lambent e2e", "EMPTYISH": "-"}


# --------------------------------------------------------------------------
# versions, aliases, layers and settings tests


def py_zip(files: dict) -> bytes:
    """A Python function zip: each .py entry (str) gets the PID-tracking
    snippet prepended, so the shutdown test can account for its process."""
    snippet = PY_PID_SNIPPET.format(pid_dir=str(PID_DIR))
    out = {}
    for name, content in files.items():
        if name.endswith(".py") and isinstance(content, str) and "def handler" in content:
            content = snippet + "\n" + content
        out[name] = content
    return make_zip(out)


PY_TAGGED = '''
TAG = {tag!r}


def handler(event, context):
    return {{"tag": TAG, "function_version": context.function_version,
            "invoked_function_arn": context.invoked_function_arn}}
'''


def py_tagged_zip(tag: str) -> bytes:
    """A tiny, fast Python function returning `tag`, the version it runs as
    and the ARN it was invoked through."""
    return py_zip({"app.py": PY_TAGGED.format(tag=tag)})


def function_arn(name: str, qualifier: str | None = None) -> str:
    arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"
    return f"{arn}:{qualifier}" if qualifier else arn


def layer_arn(name: str, version: int | None = None) -> str:
    arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:layer:{name}"
    return f"{arn}:{version}" if version is not None else arn


def paginate_all(fn, key: str, page_size: int, **kw) -> tuple[list, int]:
    """Walk a Marker/MaxItems list op by hand; returns (items, pages)."""
    items, pages, marker = [], 0, None
    while True:
        args = dict(kw, MaxItems=page_size)
        if marker:
            args["Marker"] = marker
        resp = fn(**args)
        pages += 1
        page = resp[key]
        assert len(page) <= page_size, (page_size, page)
        items.extend(page)
        marker = resp.get("NextMarker")
        if not marker:
            return items, pages
        assert pages < 100, "pagination does not end"


# --------------------------------------------------------------------------
# the sandbox probe (tests/functions/probe-rs, test_sandbox.py)


def http_echo_binary() -> Path:
    """The lambda_http test function (tests/functions/http-rs)."""
    return Path(os.environ.get("LAMBENT_TEST_HTTP_ECHO") or _default_target_dir() / "debug" / "http-echo")


def probe_binary() -> Path:
    return Path(os.environ.get("LAMBENT_TEST_PROBE") or _default_target_dir() / "debug" / "probe")


def probe_zip(extra_files: dict | None = None) -> bytes:
    """The sandbox probe as a `provided` function: the binary as `bootstrap`
    (mode 0755), plus `extra_files` (see make_zip)."""
    path = probe_binary()
    if not path.is_file():
        pytest.fail(
            f"sandbox probe not built: {path} is missing "
            "(run `cargo build --workspace`, or set LAMBENT_TEST_PROBE)"
        )
    files = {"bootstrap": (path.read_bytes(), 0o755)}
    files.update(extra_files or {})
    return make_zip(files)


# --------------------------------------------------------------------------
# asynchronous invocation: waiting, function logs, a recording webhook
# (test_async.py)

from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: E402


def wait_until(check, timeout: float, what: str = "the condition", interval: float = 0.1, server: Server | None = None):
    """Call `check` until it returns something truthy (returned) or `timeout`
    seconds pass (AssertionError naming `what`, with the server's log tail)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            tail = f"\n--- server log (tail) ---\n{server.log_tail()}" if server is not None else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{tail}")
        time.sleep(interval)


def logs_client(server: Server):
    """A boto3 CloudWatch Logs client for `server` (no retries)."""
    return boto3.session.Session().client(
        "logs",
        endpoint_url=server.endpoint,
        region_name=REGION,
        aws_access_key_id=server.credentials["access_key_id"],
        aws_secret_access_key=server.credentials["secret_access_key"],
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}, read_timeout=60),
    )


def log_messages(logs, function_name: str, filter_pattern: str | None = None) -> list[str]:
    """Every message of the function's log group matching `filter_pattern`
    (all pages); [] while the group does not exist yet."""
    kw = {"logGroupName": f"/aws/lambda/{function_name}"}
    if filter_pattern:
        kw["filterPattern"] = filter_pattern
    out, token = [], None
    while True:
        try:
            page = logs.filter_log_events(**kw, **({"nextToken": token} if token else {}))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                return []
            raise
        out += [e["message"] for e in page["events"]]
        token = page.get("nextToken")
        if not token:
            return out


@dataclass
class HookRequest:
    method: str
    path: str
    headers: dict  # lower-case names
    body: bytes
    status: int  # what the webhook answered
    at: float  # time.time() when it arrived

    @property
    def json(self):
        return json.loads(self.body)


class _HookHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so a busy sender need not reconnect
    # The reply goes out as headers then body; with Nagle on, the body waits for the sender's
    # delayed ACK (40 ms a request).
    disable_nagle_algorithm = True

    def _body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def do_POST(self):
        body = self._body()
        hook: Webhook = self.server.hook
        status = hook._status_for(self.path)
        hook._record(
            HookRequest(
                method=self.command,
                path=self.path,
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
                status=status,
                at=time.time(),
            )
        )
        reply = b"ok"
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    do_PUT = do_POST

    def log_message(self, *args):
        pass


class _HookServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def handle_error(self, request, client_address):
        # a sender that dies mid-request (the crash test kills the server) is no error here
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class Webhook:
    """An HTTP endpoint in the test process that records every request
    (async destinations, dead-letter targets). Answers 200 unless told to
    fail the next requests of a path (`fail_next`)."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self._cond = threading.Condition()
        self._requests: list[HookRequest] = []
        self._failures: dict[str, list] = {}
        self._server = _HookServer(("127.0.0.1", self.port), _HookHandler)
        self._server.hook = self
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"webhook-{self.port}", daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def arn(self, path: str) -> str:
        return f"arn:lambent:webhook:::{self.url(path)}"

    def fail_next(self, path: str, count: int, status: int = 503):
        with self._cond:
            self._failures[path] = [count, status]

    def _status_for(self, path: str) -> int:
        with self._cond:
            rule = self._failures.get(path)
            if rule and rule[0] > 0:
                rule[0] -= 1
                return rule[1]
        return 200

    def _record(self, req: HookRequest):
        with self._cond:
            self._requests.append(req)
            self._cond.notify_all()

    def received(self, path: str | None = None, include_failed: bool = False) -> list[HookRequest]:
        """Requests so far (for `path` if given); by default only those answered 2xx."""
        with self._cond:
            return [
                r
                for r in self._requests
                if (path is None or r.path == path) and (include_failed or 200 <= r.status < 300)
            ]

    def wait_for(self, path: str, count: int = 1, timeout: float = 30.0, server: Server | None = None) -> list[HookRequest]:
        """Wait until `count` requests to `path` were answered 2xx; returns all of them."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = [r for r in self._requests if r.path == path and 200 <= r.status < 300]
                if len(got) >= count:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    tail = f"\n--- server log (tail) ---\n{server.log_tail()}" if server is not None else ""
                    raise AssertionError(
                        f"webhook {self.url(path)} got {len(got)} of {count} expected deliveries within {timeout:.0f}s{tail}"
                    )
                self._cond.wait(min(left, 0.5))

    def stop(self):
        self._server.shutdown()
        self._server.server_close()


# --------------------------------------------------------------------------
# hand-signed requests and a recording proxy (test_access.py)

import datetime as _datetime  # noqa: E402
import http.client  # noqa: E402
from unittest import mock  # noqa: E402


def sigv4_sign(
    method: str,
    url: str,
    access_key: str,
    secret_key: str,
    body: bytes = b"",
    headers: dict | None = None,
    region: str = REGION,
    service: str = "lambda",
    when: _datetime.datetime | None = None,
) -> dict:
    """The headers botocore's SigV4Auth adds to a request (X-Amz-Date and
    Authorization, plus the `headers` given), signing with `region` and
    `service` as the credential scope and, if given, `when` (UTC) as the clock."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    req = AWSRequest(method=method, url=url, data=body, headers=dict(headers or {}))
    signer = SigV4Auth(Credentials(access_key, secret_key), service, region)
    if when is None:
        signer.add_auth(req)
    else:
        if when.tzinfo is not None:
            when = when.astimezone(_datetime.timezone.utc).replace(tzinfo=None)
        with mock.patch("botocore.auth.get_current_datetime", lambda *a, **k: when):
            signer.add_auth(req)
    return dict(req.headers.items())


@dataclass
class RawResponse:
    status: int
    headers: dict  # lower-case names (a repeated header keeps its last value)
    body: bytes

    @property
    def error_type(self) -> str:
        """x-amzn-ErrorType (without any `:…` suffix), else the body's __type/code."""
        raw = self.headers.get("x-amzn-errortype", "")
        if not raw:
            try:
                doc = json.loads(self.body)
                raw = doc.get("__type") or doc.get("code") or doc.get("Code") or ""
            except (ValueError, AttributeError):
                raw = ""
        return raw.split(":")[0].rsplit("#", 1)[-1]


def raw_request(
    port: int, method: str, path: str, headers: list[tuple[str, str]], body: bytes = b"", timeout: float = 30.0
) -> RawResponse:
    """Send one HTTP/1.1 request to 127.0.0.1:`port` with exactly `headers`
    (a list, so a header may be repeated), a Host header of 127.0.0.1:`port`
    unless `headers` has one, and a Content-Length for a body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        has_host = any(k.lower() == "host" for k, _ in headers)
        conn.putrequest(method, path, skip_host=has_host, skip_accept_encoding=True)
        for k, v in headers:
            conn.putheader(k, v)
        if body or method in ("POST", "PUT", "PATCH"):
            if not any(k.lower() == "content-length" for k, _ in headers):
                conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body if body else None)
        resp = conn.getresponse()
        data = resp.read()
        return RawResponse(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
    finally:
        conn.close()


@dataclass
class Exchange:
    """One request that went through a RecordingProxy, and its answer."""

    method: str
    path: str
    headers: list  # (name, value) as received, in order
    body: bytes
    status: int
    response_headers: dict  # lower-case names
    response_body: bytes
    at: float

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    @property
    def error_type(self) -> str:
        return RawResponse(self.status, self.response_headers, self.response_body).error_type


_HOP_BY_HOP = {
    "connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection", "upgrade", "te", "expect"
}


class _ProxyHandler(_HookHandler):
    def _forward(self):
        body = self._body()
        proxy: RecordingProxy = self.server.proxy
        headers = [(k, v) for k, v in self.headers.items()]
        conn = http.client.HTTPConnection("127.0.0.1", proxy.target_port, timeout=120)
        try:
            # the request goes on unchanged (Host included: the client signed it)
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for k, v in headers:
                if k.lower() not in _HOP_BY_HOP:
                    conn.putheader(k, v)
            if body or self.command in ("POST", "PUT", "PATCH"):
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body if body else None)
            resp = conn.getresponse()
            data = resp.read()
            resp_headers = resp.getheaders()
            status = resp.status
        finally:
            conn.close()
        proxy._record(
            Exchange(
                method=self.command,
                path=self.path,
                headers=headers,
                body=body,
                status=status,
                response_headers={k.lower(): v for k, v in resp_headers},
                response_body=data,
                at=time.time(),
            )
        )
        self.send_response(status)
        for k, v in resp_headers:
            if k.lower() not in _HOP_BY_HOP and k.lower() not in ("date", "server"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _forward


class RecordingProxy:
    """A plain HTTP proxy in the test process (point a client's endpoint at
    `url`) that forwards every request unchanged to 127.0.0.1:`target_port`
    and records it with its answer, so a test can see what a client (e.g. the
    `lambent` CLI) really sent and what the server really answered."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.port = free_port()
        self._lock = threading.Lock()
        self._exchanges: list[Exchange] = []
        self._server = _HookServer(("127.0.0.1", self.port), _ProxyHandler)
        self._server.proxy = self
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"proxy-{self.port}", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _record(self, ex: Exchange):
        with self._lock:
            self._exchanges.append(ex)

    def exchanges(self) -> list[Exchange]:
        with self._lock:
            return list(self._exchanges)

    def mark(self) -> int:
        """A position to pass to `since`."""
        with self._lock:
            return len(self._exchanges)

    def since(self, mark: int) -> list[Exchange]:
        with self._lock:
            return list(self._exchanges[mark:])

    def stop(self):
        self._server.shutdown()
        self._server.server_close()


class TcpProxy:
    """A TCP forwarder to a broker that can be cut (every connection closed, new ones closed
    at once) and restored (`start`). Its port stays bound throughout, so no other socket can
    take it while the broker is "away"."""

    def __init__(self, upstream: tuple[str, int]):
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        self.up = True
        threading.Thread(target=self._accept, daemon=True).start()

    def start(self):
        """Restores forwarding after `cut`."""
        self.up = True

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self):
        """Closes every forwarded connection; new ones are closed at once until `start`."""
        self.up = False
        with self.lock:
            for s in self.sockets:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                    s.close()
                except OSError:
                    pass
            self.sockets.clear()

    def close(self):
        self.cut()
        self.listener.close()

