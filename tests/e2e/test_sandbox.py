"""The execution-environment sandbox (DESIGN.md §3), tested from inside.

A module-wide `lambent serve --sandbox namespaces` runs the probe function
(tests/functions/probe-rs, a `lambda_runtime` binary): its `report` action
describes the environment as the function sees it (ids, capabilities,
seccomp, namespaces, cgroups, mounts, PIDs, network), and its `attack`
actions try what a function must not be able to do. The attack suite runs
once, in a background thread, while a quiet neighbour function is invoked
over and over (its latency is printed, never asserted); the tests below then
check each attack's outcome. Managed runtimes, layers in /opt and the
official runtime interface clients are checked under the sandbox too, and
the last test stops the server and looks for leftovers (processes of the
sandbox uid, cgroup directories, veth interfaces).

Sandboxed functions are created with `lam.create_function` directly: the
suite's PID-tracking directory (helpers.PID_DIR, a host path) is not visible
inside an environment.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import helpers as h

pytestmark = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0, reason="the namespaces sandbox needs root"
)

SANDBOX_UID = 993
SANDBOX_GID = 990
PIDS_LIMIT = 1024
RUNTIME_API = "127.0.0.1:9001"
NETWORK_TAG = "lambent:network"
NS_KINDS = ("pid", "mnt", "ipc", "uts", "net")
ZERO_CAPS = "0000000000000000"
MIB = 1024 * 1024
# how the module's server is started; LAMBENT_TEST_SANDBOX_ARGS overrides it
# (e.g. "--sandbox none" to dry-run the probe and this module unsandboxed).
# LAMBENT_TEST_SANDBOX_DUMP=<file> writes every probe answer there as JSON.
SANDBOX_ARGS = os.environ.get("LAMBENT_TEST_SANDBOX_ARGS", "--sandbox namespaces").split()
TMP600 = 600  # EphemeralStorage of the function whose /tmp is filled

# errno names the probe reports for "refused"
DENIED = {"EPERM", "EACCES"}
READONLY = {"EROFS", "EACCES", "EPERM"}
INVISIBLE = {"ENOENT", "EACCES"}
UNREACHABLE = {"ECONNREFUSED", "ETIMEDOUT", "ENETUNREACH", "EHOSTUNREACH", "EACCES", "EPERM", "ECONNRESET"}


# --------------------------------------------------------------------------
# host-side observations


def uid_processes(uid: int = SANDBOX_UID) -> dict[int, dict]:
    """Live (non-zombie) processes whose real uid is `uid`."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            cgroup = Path(f"/proc/{pid}/cgroup").read_text()
        except OSError:
            continue
        m = re.search(r"^Uid:\s+(\d+)", status, re.M)
        if not m or int(m.group(1)) != uid:
            continue
        start = h.proc_start_time(pid)
        if start is None:
            continue
        name = re.search(r"^Name:\s*(.*)$", status, re.M)
        out[pid] = {"start": start, "cgroup": cgroup, "name": name.group(1) if name else "?"}
    return out


def veth_interfaces() -> set[str]:
    try:
        return {n for n in os.listdir("/sys/class/net") if n.startswith("lbv")}
    except OSError:
        return set()


def server_cgroup_dirs(server_pid: int) -> list[Path]:
    return sorted(Path("/sys/fs/cgroup").glob(f"*/lambent/{server_pid}"))


def all_lambent_cgroup_dirs() -> list[Path]:
    return sorted(p for p in Path("/sys/fs/cgroup").glob("*/lambent/*") if p.name.isdigit() and p.is_dir())


def server_pids_in_cgroup(text: str) -> set[int]:
    return {int(m) for m in re.findall(r"/lambent/(\d+)(?:/|$)", text, re.M)}


def host_ipv4_addresses() -> list[str]:
    """The host's own IPv4 addresses other than loopback (`ip -o -4 addr`)."""
    try:
        out = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    addrs = []
    for line in out.splitlines():
        m = re.search(r"\binet (\d+\.\d+\.\d+\.\d+)/", line)
        if m and not m.group(1).startswith("127.") and m.group(1) not in addrs:
            addrs.append(m.group(1))
    return addrs


def cgroup_paths(text: str) -> dict[str, str]:
    """/proc/<pid>/cgroup → {controller: path}; the v2 line is "unified"."""
    out = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if not controllers:
            out["unified"] = path
        for c in controllers.split(","):
            if c:
                out[c] = path
    return out


def host_cgroup_limits(cgroup_text: str) -> dict:
    """Reads an environment's limits on the host, from the paths its
    /proc/self/cgroup shows (there is no cgroup namespace)."""
    paths = cgroup_paths(cgroup_text)
    root = Path("/sys/fs/cgroup")
    if "memory" in paths:  # v1
        mem = root / "memory" / paths["memory"].lstrip("/")
        pids = root / "pids" / paths["pids"].lstrip("/")
        cpu = root / "cpu" / paths["cpu"].lstrip("/")
        return {
            "version": 1,
            "paths": {"memory": str(mem), "pids": str(pids), "cpu": str(cpu)},
            "memory": int((mem / "memory.limit_in_bytes").read_text()),
            "pids": (pids / "pids.max").read_text().strip(),
            "cpu": int((cpu / "cpu.shares").read_text()),
        }
    # v2: the unified hierarchy is at /sys/fs/cgroup or /sys/fs/cgroup/unified
    rel = paths["unified"].lstrip("/")
    for base in (root, root / "unified"):
        d = base / rel
        if (d / "memory.max").exists():
            return {
                "version": 2,
                "paths": {"unified": str(d)},
                "memory": int((d / "memory.max").read_text()),
                "pids": (d / "pids.max").read_text().strip(),
                "cpu": int((d / "cpu.weight").read_text()),
            }
    raise AssertionError(f"no cgroup with limits found for {cgroup_text!r}")


def parse_mounts(lines: list[str]) -> dict[str, dict]:
    """/proc/self/mounts → {mount point: {"fstype", "opts"}}; the last mount
    on a point (the one on top) wins."""
    out = {}
    for line in lines:
        parts = line.split()
        if len(parts) < 4:
            continue
        point = parts[1].replace("\\040", " ")
        out[point] = {"source": parts[0], "fstype": parts[2], "opts": parts[3].split(",")}
    return out


def tmpfs_size_bytes(opts: list[str]) -> int | None:
    for o in opts:
        m = re.fullmatch(r"size=(\d+)([kmgKMG]?)", o)
        if m:
            mult = {"": 1, "k": 1024, "m": MIB, "g": 1024 * MIB}[m.group(2).lower()]
            return int(m.group(1)) * mult
    return None


class HostListener:
    """A TCP listener on the host (0.0.0.0, any free port) that records every
    connection it accepts: no environment may reach it."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("0.0.0.0", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted: list = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sandbox-host-listener", daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                conn, peer = self.sock.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            self.accepted.append(peer)
            conn.close()

    def close(self):
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


# --------------------------------------------------------------------------
# the module's sandboxed server


@dataclass
class Sandbox:
    srv: h.Server
    lam: object
    procs_before: dict
    veths_before: set
    cgroups_before: list
    stopped: bool = False
    exit_code: int | None = None
    leftovers: dict = field(default_factory=dict)


def _collect_leftovers(sbx: Sandbox, timeout: float = 15.0) -> dict:
    """Stops the server (SIGTERM) and waits up to `timeout` for its
    environments to disappear; returns what is still there."""
    server_pid = sbx.srv.proc.pid
    ours_before_stop = {
        pid: p for pid, p in uid_processes().items() if server_pid in server_pids_in_cgroup(p["cgroup"])
    }
    sbx.exit_code = sbx.srv.terminate()
    sbx.stopped = True
    deadline = time.monotonic() + timeout
    while True:
        now = uid_processes()
        ours = {
            pid: p
            for pid, p in now.items()
            if server_pid in server_pids_in_cgroup(p["cgroup"])
            or (pid in ours_before_stop and ours_before_stop[pid]["start"] == p["start"])
        }
        strays = {}
        for pid, p in now.items():
            if pid in ours:
                continue
            before = sbx.procs_before.get(pid)
            if before and before["start"] == p["start"]:
                continue  # was there before this module's server started
            owners = server_pids_in_cgroup(p["cgroup"]) - {server_pid}
            if any(h.proc_start_time(o) is not None for o in owners):
                continue  # belongs to another live lambent server (e.g. the session's)
            strays[pid] = p
        left = {
            "processes": {pid: (p["name"], p["cgroup"].strip()) for pid, p in ours.items()},
            "stray_processes": {pid: (p["name"], p["cgroup"].strip()) for pid, p in strays.items()},
            "cgroup_dirs": [str(p) for p in server_cgroup_dirs(server_pid)],
            "veth_interfaces": sorted(veth_interfaces() - sbx.veths_before),
        }
        # the per-server bridge helpers.start_server names (not part of the contract: printed only)
        left_bridge = Path(f"/sys/class/net/lbt{sbx.srv.port}").exists()
        if not any(left.values()) or time.monotonic() > deadline:
            sbx.leftovers = left
            print(f"after the server stopped: {left}; bridge lbt{sbx.srv.port} still there: {left_bridge}")
            return left
        time.sleep(0.2)


def _assert_no_leftovers(sbx: Sandbox):
    left = sbx.leftovers
    assert sbx.exit_code == 0, f"lambent serve exited with {sbx.exit_code}:\n{sbx.srv.log_tail(40)}"
    assert not left["processes"], f"processes of the sandbox uid outlived the server: {left['processes']}"
    assert not left["stray_processes"], (
        f"processes of the sandbox uid {SANDBOX_UID} outside any live server's cgroup: {left['stray_processes']}"
    )
    assert not left["cgroup_dirs"], f"cgroup directories left behind: {left['cgroup_dirs']}"
    assert not left["veth_interfaces"], (
        f"veth interfaces left behind: {left['veth_interfaces']} "
        "(another lambent server running bridge environments at the same time would also show up here)"
    )


@pytest.fixture(scope="module")
def sbx(tmp_path_factory):
    base = tmp_path_factory.mktemp("sandbox")
    procs_before = uid_processes()
    veths_before = veth_interfaces()
    cgroups_before = all_lambent_cgroup_dirs()
    srv = h.start_server(base / "data", base / "server.log", extra_args=SANDBOX_ARGS)
    state = Sandbox(
        srv=srv,
        lam=srv.client(read_timeout=120),
        procs_before=procs_before,
        veths_before=veths_before,
        cgroups_before=cgroups_before,
    )
    print(
        f"sandbox server pid {srv.proc.pid}; before it started: {len(procs_before)} uid-{SANDBOX_UID} processes, "
        f"{len(veths_before)} lbv* interfaces, {len(cgroups_before)} lambent cgroup dirs"
    )
    try:
        yield state
    finally:
        if os.environ.get("LAMBENT_TEST_SHOW_LOG"):
            print(f"\n--- sandboxed lambent server log ({srv.log_path}) ---\n{srv.log_tail(400)}")
        if not state.stopped:
            # test_zz_no_leftovers_after_shutdown did not run (deselected or
            # failed before): stop the server here and still check.
            try:
                _collect_leftovers(state)
            finally:
                if srv.proc.poll() is None:
                    srv.terminate()
            _assert_no_leftovers(state)


def invoke_body(sbx: Sandbox, name: str, payload: dict, lam=None):
    """Invoke; the decoded body, failing with the server log on a function error."""
    resp, body = h.invoke(lam or sbx.lam, name, payload)
    assert resp["StatusCode"] == 200, resp
    assert "FunctionError" not in resp, (
        f"{name} {payload}: {resp.get('FunctionError')} {body!r}\n--- server log ---\n{sbx.srv.log_tail(30)}"
    )
    assert isinstance(body, dict), body
    return body


def report(sbx: Sandbox, name: str) -> dict:
    return invoke_body(sbx, name, {"action": "report"})


def attack(sbx: Sandbox, name: str, attack_name: str, **args) -> dict:
    body = invoke_body(sbx, name, {"action": "attack", "name": attack_name, **args})
    assert body.get("name") == attack_name and "ok" in body, body
    return body


def create_probe(sbx: Sandbox, prefix: str, extra_files=None, network: str | None = None, memory=256, **kw) -> str:
    name = h.uniq(prefix)
    args = dict(
        FunctionName=name,
        Runtime="provided.al2023",
        Handler="bootstrap",
        Role=h.ROLE,
        Code={"ZipFile": h.probe_zip(extra_files)},
        MemorySize=memory,
        Timeout=60,
    )
    if network:
        args["Tags"] = {NETWORK_TAG: network}
    args.update(kw)
    resp = sbx.lam.create_function(**args)
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 201, resp["ResponseMetadata"]
    return name


# --------------------------------------------------------------------------
# the probe functions


@dataclass
class Fns:
    none: str  # network none, 256 MB; the main attack target
    other: str  # network none, another function's code
    default: str  # no network tag, 512 MB
    tmp600: str  # EphemeralStorage 600, 1024 MB
    oom: str  # 128 MB
    bomb: str
    quiet: str  # the neighbour whose latency is measured
    bridge: str | None  # network bridge (None when the server refuses it)
    peer: str | None  # a second bridge function
    mine_file: str
    mine_content: str
    other_file: str
    other_content: str
    reports: dict  # first report of each function


@pytest.fixture(scope="module")
def fns(sbx) -> Fns:
    tag = uuid.uuid4().hex[:10]
    mine_file, other_file = f"mine-{tag}.txt", f"theirs-{tag}.txt"
    mine_content, other_content = f"mine {uuid.uuid4()}", f"theirs {uuid.uuid4()}"
    names = dict(
        none=create_probe(sbx, "sbx-none", {mine_file: mine_content}, network="none"),
        other=create_probe(sbx, "sbx-other", {other_file: other_content}, network="none"),
        default=create_probe(sbx, "sbx-default", memory=512),
        tmp600=create_probe(sbx, "sbx-tmp600", network="none", memory=1024, EphemeralStorage={"Size": TMP600}),
        oom=create_probe(sbx, "sbx-oom", network="none", memory=128),
        bomb=create_probe(sbx, "sbx-bomb", network="none"),
        quiet=create_probe(sbx, "sbx-quiet", network="none", memory=128),
    )
    for key in ("bridge", "peer"):
        try:
            names[key] = create_probe(sbx, f"sbx-{key}", network="bridge")
        except h.ClientError as e:
            err = h.aws_error(e)
            assert err.code == "InvalidParameterValueException", err
            names[key] = None
    reports = {key: report(sbx, name) for key, name in names.items() if name}
    return Fns(
        **names,
        mine_file=mine_file,
        mine_content=mine_content,
        other_file=other_file,
        other_content=other_content,
        reports=reports,
    )


@pytest.fixture(scope="module")
def listener():
    lst = HostListener()
    yield lst
    lst.close()


def _need_bridge(fns: Fns):
    if not fns.bridge:
        pytest.skip("the server refused lambent:network=bridge (not supported on this host)")


def _bridge_ip(rep: dict) -> str | None:
    for ifname, addrs in (rep.get("addresses") or {}).items():
        if ifname != "lo" and addrs:
            return addrs[0]
    return None


# --------------------------------------------------------------------------
# the attack suite (run once, in the background, next to a quiet function)


@dataclass
class Suite:
    results: dict
    ctx: dict
    idle_ms: list
    busy_ms: list
    busy_errors: list


def _build_steps(sbx: Sandbox, fns: Fns, listener: HostListener) -> tuple[list, dict]:
    """Every step is (key, function, payload, kind); kind "once" records the
    one answer, "retry" pings up to three times (the environment may have
    been replaced)."""
    srv = sbx.srv
    data_dir = srv.data_dir.resolve()
    ctx: dict = {"host_ips": host_ipv4_addresses(), "listener_port": listener.port}
    steps: list = []

    def atk(key, fn, name, **args):
        steps.append((key, fn, {"action": "attack", "name": name, **args}, "once"))

    # privileged operations (seccomp, no capabilities)
    for name, args, _allowed in PRIVILEGED:
        atk(privileged_key(name, args), fns.none, name, **args)

    # code of this and of another function
    atk("read mine", fns.none, "read_file", path=f"/var/task/{fns.mine_file}")
    atk("read theirs", fns.none, "read_file", path=f"/var/task/{fns.other_file}", redact=True)
    atk("list /var/task", fns.none, "list_dir", path="/var/task")
    theirs_on_host = [
        str(Path(root) / fns.other_file) for root, _dirs, files in os.walk(data_dir) if fns.other_file in files
    ]
    ctx["theirs_on_host"] = theirs_on_host
    for i, p in enumerate(theirs_on_host[:3]):
        atk(f"read theirs on host {i}", fns.none, "read_file", path=p, redact=True)

    # the server's data directory
    ctx["data_dir"] = str(data_dir)
    atk("read credentials", fns.none, "read_file", path=str(data_dir / "credentials.json"), redact=True)
    atk("list data dir", fns.none, "list_dir", path=str(data_dir))
    data_files = sorted(str(Path(root) / f) for root, _dirs, files in os.walk(data_dir) for f in files)
    ctx["data_files"] = data_files[:5]
    for i, p in enumerate(ctx["data_files"]):
        atk(f"read data file {i}", fns.none, "read_file", path=p, redact=True)

    # host secrets and directories
    atk("read /etc/shadow", fns.none, "read_file", path="/etc/shadow", redact=True)
    for d in ("/home", "/root", "/root/.pyenv", "/root/.pyenv/versions", "/var"):
        atk(f"list {d}", fns.none, "list_dir", path=d)
    root_dotfiles = [
        f"/root/{n}"
        for n in (".bashrc", ".profile", ".bash_history", ".gitconfig", ".ssh/authorized_keys", ".cargo/env")
        if os.path.isfile(f"/root/{n}")
    ]
    ctx["root_dotfiles"] = root_dotfiles
    for p in root_dotfiles:
        atk(f"read {p}", fns.none, "read_file", path=p, redact=True)
    atk("read server cmdline", fns.none, "read_file", path=f"/proc/{srv.proc.pid}/cmdline", redact=True)

    # writes
    u = uuid.uuid4().hex[:8]
    for d in WRITE_DIRS:
        atk(f"write {d}", fns.none, "write_file", path=f"{d.rstrip('/')}/lambent-probe-{u}")
    atk("write existing bootstrap", fns.none, "write_file", path="/var/task/bootstrap", existing=True)
    atk("write /tmp", fns.none, "write_file", path=f"/tmp/lambent-probe-{u}")

    # processes
    atk("kill 0 server", fns.none, "kill", pid=srv.proc.pid, signal=0)
    atk("kill 9 server", fns.none, "kill", pid=srv.proc.pid, signal=9)
    atk("ptrace server", fns.none, "ptrace", pid=srv.proc.pid)
    atk("ptrace 1", fns.none, "ptrace", pid=1)
    atk("kill 9 pid 1", fns.none, "kill", pid=1, signal=9)
    steps.append(("ping after kill", fns.none, {"action": "ping"}, "retry"))

    # network: a `none` function
    atk("none: own runtime api", fns.none, "connect", host="127.0.0.1", port=9001)
    atk("none: server port", fns.none, "connect", host="127.0.0.1", port=srv.port)
    atk("none: steal from server port", fns.none, "steal_invocation", host="127.0.0.1", port=srv.port)
    atk("none: host listener on lo", fns.none, "connect", host="127.0.0.1", port=listener.port)
    for ip in ctx["host_ips"]:
        atk(f"none: host listener on {ip}", fns.none, "connect", host=ip, port=listener.port)

    # network: `bridge` functions
    if fns.bridge:
        gw = (fns.reports["bridge"].get("route") or {}).get("gateway")
        peer_ip = _bridge_ip(fns.reports["peer"]) if fns.peer else None
        ctx["gateway"], ctx["peer_ip"] = gw, peer_ip
        atk("bridge: own runtime api", fns.bridge, "connect", host="127.0.0.1", port=9001)
        atk("bridge: server port on lo", fns.bridge, "connect", host="127.0.0.1", port=srv.port)
        atk("bridge: steal from server port on lo", fns.bridge, "steal_invocation", host="127.0.0.1", port=srv.port)
        atk("bridge: host listener on lo", fns.bridge, "connect", host="127.0.0.1", port=listener.port)
        if gw:
            atk("bridge: api metrics on gateway", fns.bridge, "connect", host=gw, port=srv.port, http_path="/metrics")
            atk("bridge: steal from server port on gateway", fns.bridge, "steal_invocation", host=gw, port=srv.port)
            atk("bridge: host listener on gateway", fns.bridge, "connect", host=gw, port=listener.port)
        for ip in ctx["host_ips"]:
            atk(f"bridge: host listener on {ip}", fns.bridge, "connect", host=ip, port=listener.port)
        if peer_ip:
            atk("peer: listen", fns.peer, "listen", port=8080, seconds=30)
            atk("bridge: peer listener", fns.bridge, "connect", host=peer_ip, port=8080)
            atk("bridge: peer runtime api", fns.bridge, "connect", host=peer_ip, port=9001)
            atk("bridge: steal from peer", fns.bridge, "steal_invocation", host=peer_ip, port=9001)
            steps.append(("peer: accepted", fns.peer, {"action": "accepted"}, "once"))

    # resources: /tmp, pids, memory
    atk("fill_tmp", fns.tmp600, "fill_tmp", mb=TMP600 + 100)
    steps.append(("ping after fill", fns.tmp600, {"action": "ping"}, "retry"))
    atk("fork_bomb", fns.bomb, "fork_bomb", seconds=3, max=2 * PIDS_LIMIT)
    steps.append(("ping after fork_bomb", fns.bomb, {"action": "ping"}, "retry"))
    atk("alloc", fns.oom, "alloc", mb=512)
    steps.append(("ping after alloc", fns.oom, {"action": "ping"}, "retry"))
    return steps, ctx


def _run_step(lam, fn: str, payload: dict, kind: str) -> dict:
    attempts = []
    for _ in range(3 if kind == "retry" else 1):
        t0 = time.monotonic()
        try:
            resp, body = h.invoke(lam, fn, payload)
            rec = {"function_error": resp.get("FunctionError"), "body": body}
        except Exception as e:  # recorded, asserted on by the tests
            rec = {"exception": repr(e)}
        rec["elapsed_s"] = round(time.monotonic() - t0, 3)
        attempts.append(rec)
        if "exception" not in rec and rec["function_error"] is None:
            break
    out = dict(attempts[-1])
    out["attempts"] = attempts
    return out


def _latency(lam, name: str, samples: list, errors: list, count=None, until: threading.Event | None = None):
    n = 0
    while (count is None or n < count) and not (until is not None and until.is_set()):
        t0 = time.monotonic()
        try:
            resp, body = h.invoke(lam, name, {"action": "ping"})
            if resp.get("FunctionError") or not (isinstance(body, dict) and body.get("pong")):
                errors.append((resp.get("FunctionError"), body))
            else:
                samples.append((time.monotonic() - t0) * 1000)
        except Exception as e:
            errors.append(repr(e))
        n += 1
        if until is not None:
            time.sleep(0.02)


def _stats(ms: list) -> str:
    if not ms:
        return "n=0"
    return f"n={len(ms)} p50={statistics.median(ms):.1f} ms max={max(ms):.1f} ms"


@pytest.fixture(scope="module")
def suite(sbx, fns, listener) -> Suite:
    steps, ctx = _build_steps(sbx, fns, listener)
    results: dict = {}
    quiet_lam = sbx.srv.client(read_timeout=120)
    attack_lam = sbx.srv.client(read_timeout=120)

    # the quiet neighbour, idle
    for _ in range(3):
        h.invoke(quiet_lam, fns.quiet, {"action": "ping"})
    idle_ms: list = []
    idle_errors: list = []
    _latency(quiet_lam, fns.quiet, idle_ms, idle_errors, count=30)
    assert not idle_errors, idle_errors

    done = threading.Event()

    def run():
        try:
            for key, fn, payload, kind in steps:
                results[key] = _run_step(attack_lam, fn, payload, kind)
        finally:
            done.set()

    thread = threading.Thread(target=run, name="sandbox-attack-suite", daemon=True)
    t0 = time.monotonic()
    thread.start()
    busy_ms: list = []
    busy_errors: list = []
    _latency(quiet_lam, fns.quiet, busy_ms, busy_errors, until=done)
    thread.join(600)
    assert not thread.is_alive(), "the attack suite did not finish within 10 minutes"
    print(
        f"\nquiet neighbour latency, idle: {_stats(idle_ms)}; during the attack suite "
        f"({len(steps)} steps, {time.monotonic() - t0:.1f} s): {_stats(busy_ms)}, {len(busy_errors)} errors"
    )
    dump = os.environ.get("LAMBENT_TEST_SANDBOX_DUMP")
    if dump:
        # everything the probe answered, for a human to read
        Path(dump).write_text(json.dumps({"reports": fns.reports, "ctx": ctx, "results": results}, indent=1))
    return Suite(results=results, ctx=ctx, idle_ms=idle_ms, busy_ms=busy_ms, busy_errors=busy_errors)


def outcome(suite: Suite, key: str) -> dict:
    """The probe's answer to one suite step (which must have answered)."""
    assert key in suite.results, f"step {key!r} did not run"
    r = suite.results[key]
    assert "exception" not in r, f"{key}: {r}"
    assert r["function_error"] is None, f"{key}: {r}"
    body = r["body"]
    assert isinstance(body, dict), f"{key}: {r}"
    return body


def assert_refused(suite: Suite, key: str, errors: set) -> dict:
    body = outcome(suite, key)
    assert body["ok"] is False, f"{key}: the attack got through: {body}"
    assert body["error"] in errors, f"{key}: expected one of {sorted(errors)}, got {body}"
    return body


# --------------------------------------------------------------------------
# what the function sees


def test_identity_capabilities_seccomp(fns):
    for key in ("none", "default", "tmp600"):
        rep = fns.reports[key]
        st = rep["status"]
        ids = (rep["uid"], rep["euid"], rep["gid"], rep["egid"])
        assert ids == (SANDBOX_UID, SANDBOX_UID, SANDBOX_GID, SANDBOX_GID), rep
        assert set(rep["groups"]) <= {SANDBOX_GID}, rep["groups"]
        for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            assert st[cap] == ZERO_CAPS, (key, cap, st)
        assert st["NoNewPrivs"] == "1", st
        assert st["Seccomp"] == "2", st
        assert rep["cwd"] == "/var/task", rep["cwd"]
        assert rep["env_runtime_api"] == RUNTIME_API, rep["env_runtime_api"]


def test_own_namespaces(fns):
    mine = {ns: os.readlink(f"/proc/self/ns/{ns}") for ns in NS_KINDS}
    a, b = fns.reports["none"]["ns"], fns.reports["other"]["ns"]
    c = fns.reports["default"]["ns"]
    for ns in NS_KINDS:
        assert a[ns].startswith(f"{ns}:["), a
        assert a[ns] != mine[ns], f"{ns} namespace shared with the host: {a[ns]}"
        assert c[ns] != mine[ns], f"{ns} namespace shared with the host: {c[ns]}"
        assert a[ns] != b[ns], f"two functions share a {ns} namespace: {a[ns]}"
        assert a[ns] != c[ns], f"two functions share a {ns} namespace: {a[ns]}"


def test_own_pid_namespace_and_proc(sbx, fns):
    rep = fns.reports["none"]
    pids = rep["pids"]
    assert rep["pid"] in pids, rep
    assert 1 in pids, pids
    assert len(pids) <= 10, f"/proc shows more than the environment's own processes: {pids}"
    assert max(pids) < 1000, pids
    assert sbx.srv.proc.pid not in pids and os.getpid() not in pids, pids
    # /proc belongs to the environment's PID namespace: one level of NSpid
    assert len(rep["status"]["NSpid"].split()) == 1, rep["status"]["NSpid"]


def test_network_none_has_only_loopback(fns):
    rep = fns.reports["none"]
    assert rep["interfaces"] == ["lo"], rep["interfaces"]
    assert rep["addresses"] == {"lo": ["127.0.0.1"]}, rep["addresses"]
    assert rep["route"] is None, rep["route"]


def test_network_bridge_has_veth_and_default(fns):
    _need_bridge(fns)
    rep = fns.reports["bridge"]
    others = [i for i in rep["interfaces"] if i != "lo"]
    assert "lo" in rep["interfaces"] and len(others) == 1, rep["interfaces"]
    assert _bridge_ip(rep), rep["addresses"]
    assert rep["route"] and rep["route"]["gateway"], rep["route"]
    assert rep["env_runtime_api"] == RUNTIME_API
    # without a tag, a function gets bridge when the server supports it
    assert [i for i in fns.reports["default"]["interfaces"] if i != "lo"], fns.reports["default"]["interfaces"]
    # and no two environments share an address
    assert _bridge_ip(rep) != _bridge_ip(fns.reports["peer"]), (rep["addresses"], fns.reports["peer"]["addresses"])


def test_cgroup_limits_on_host(sbx, fns):
    server_pid = sbx.srv.proc.pid
    small = report(sbx, fns.none)  # 256 MB; the environment is alive while we read
    lim_small = host_cgroup_limits(small["cgroup"])
    big = report(sbx, fns.default)  # 512 MB
    lim_big = host_cgroup_limits(big["cgroup"])
    for lim in (lim_small, lim_big):
        for path in lim["paths"].values():
            assert f"/lambent/{server_pid}/" in path, lim["paths"]
        assert lim["pids"] == str(PIDS_LIMIT), lim
        assert lim["cpu"] > 0, lim
    assert lim_small["memory"] == 256 * MIB, lim_small
    assert lim_big["memory"] == 512 * MIB, lim_big
    assert lim_big["cpu"] > lim_small["cpu"], (lim_small, lim_big)
    assert lim_small["paths"] != lim_big["paths"]
    print(f"cgroups: 256 MB → {lim_small}; 512 MB → {lim_big}")


def test_mounts_and_tmp_size(sbx, fns):
    for key, size_mb in (("tmp600", TMP600), ("none", 512)):
        rep = fns.reports[key]
        mounts = parse_mounts(rep["mounts"])
        assert "ro" in mounts["/"]["opts"], mounts["/"]
        assert "/var/task" in mounts, sorted(mounts)
        assert "ro" in mounts["/var/task"]["opts"], mounts["/var/task"]
        if "/opt" in mounts:
            assert "ro" in mounts["/opt"]["opts"], mounts["/opt"]
        tmp = mounts["/tmp"]
        assert tmp["fstype"] == "tmpfs" and "rw" in tmp["opts"], tmp
        assert tmpfs_size_bytes(tmp["opts"]) == size_mb * MIB, tmp
        assert rep["tmp"]["total_bytes"] == size_mb * MIB, rep["tmp"]
        assert mounts["/proc"]["fstype"] == "proc", mounts["/proc"]
    devs = attack(sbx, fns.none, "list_dir", path="/dev")
    assert devs["ok"], devs
    entries = set(devs["detail"]["entries"])
    assert {"null", "zero", "random", "urandom"} <= entries, entries
    harmless = {"null", "zero", "random", "urandom", "full", "fd", "stdin", "stdout", "stderr", "shm", "pts", "ptmx"}
    assert entries <= harmless, f"unexpected device nodes: {sorted(entries - harmless)}"
    assert "tty" not in entries


# --------------------------------------------------------------------------
# attacks: privileged operations

PRIVILEGED = [
    ("mount", {}, {"EPERM"}),
    ("umount", {"path": "/var/task"}, {"EPERM"}),
    ("umount", {"path": "/proc"}, {"EPERM"}),
    ("umount", {"path": "/tmp"}, {"EPERM"}),
    ("pivot_root", {}, {"EPERM"}),
    ("load_module", {}, {"EPERM"}),
    ("kexec", {}, {"EPERM"}),
    ("unshare", {"flags": "net"}, {"EPERM"}),
    ("unshare", {"flags": "user"}, {"EPERM"}),
    ("unshare", {"flags": "mnt"}, {"EPERM"}),
    ("unshare", {"flags": "pid"}, {"EPERM"}),
    ("setns", {"ns": "net"}, {"EPERM"}),
    ("setns", {"ns": "mnt"}, {"EPERM"}),
    ("chroot", {}, {"EPERM"}),
    ("setuid0", {}, {"EPERM"}),
    ("reboot", {}, {"EPERM"}),
    ("bpf", {}, {"EPERM"}),
    ("perf_event_open", {}, {"EPERM", "EACCES"}),
    ("keyctl", {}, {"EPERM"}),
    ("swapon", {}, {"EPERM"}),
    ("raw_socket", {}, {"EPERM", "EACCES", "EAFNOSUPPORT"}),
    ("sysctl_write", {}, {"EACCES", "EROFS", "EPERM"}),
    ("mknod", {}, {"EPERM"}),
]


def privileged_key(name: str, args: dict) -> str:
    return " ".join([name, *(str(v) for v in args.values())])


@pytest.mark.parametrize(
    "name,args,allowed", PRIVILEGED, ids=[privileged_key(n, a) for n, a, _ in PRIVILEGED]
)
def test_privileged_operation_refused(suite, name, args, allowed):
    assert_refused(suite, privileged_key(name, args), allowed)


# --------------------------------------------------------------------------
# attacks: files


def test_code_of_other_functions_invisible(suite, fns):
    mine = outcome(suite, "read mine")
    assert mine["ok"] and mine["detail"]["content"] == fns.mine_content, mine
    assert_refused(suite, "read theirs", {"ENOENT"})
    listing = outcome(suite, "list /var/task")
    assert listing["ok"], listing
    assert fns.mine_file in listing["detail"]["entries"] and "bootstrap" in listing["detail"]["entries"], listing
    assert fns.other_file not in listing["detail"]["entries"], listing
    # the other function's code where it lives on the host
    theirs = suite.ctx["theirs_on_host"]
    assert theirs, f"{fns.other_file} not found under the data directory {suite.ctx['data_dir']}"
    for i, _ in enumerate(theirs[:3]):
        assert_refused(suite, f"read theirs on host {i}", INVISIBLE)


def test_data_directory_invisible(suite):
    assert_refused(suite, "read credentials", INVISIBLE)
    assert_refused(suite, "list data dir", INVISIBLE)
    assert suite.ctx["data_files"], "the data directory is empty?"
    for i, _ in enumerate(suite.ctx["data_files"]):
        assert_refused(suite, f"read data file {i}", INVISIBLE)


def _listing_or_missing(suite, key) -> list:
    body = outcome(suite, key)
    if body["ok"]:
        return body["detail"]["entries"]
    assert body["error"] in INVISIBLE, body
    return []


def test_host_secrets_invisible(suite):
    assert_refused(suite, "read /etc/shadow", INVISIBLE)
    assert _listing_or_missing(suite, "list /home") == []
    # only a managed interpreter prefix (e.g. /root/.pyenv/versions/X) may show
    assert set(_listing_or_missing(suite, "list /root")) <= {".pyenv"}
    assert set(_listing_or_missing(suite, "list /root/.pyenv")) <= {"versions"}
    assert len(_listing_or_missing(suite, "list /root/.pyenv/versions")) <= 1
    for p in suite.ctx["root_dotfiles"]:
        assert_refused(suite, f"read {p}", INVISIBLE)
    assert set(_listing_or_missing(suite, "list /var")) <= {"task", "runtime"}
    assert_refused(suite, "read server cmdline", {"ENOENT", "ESRCH", "EACCES"})


WRITE_DIRS = ["/var/task", "/etc", "/", "/opt", "/usr", "/var/runtime", "/var"]


@pytest.mark.parametrize("d", WRITE_DIRS)
def test_read_only_paths(suite, d):
    # /opt and /var/runtime may be missing for a function without layers or a managed runtime
    allowed = READONLY | ({"ENOENT"} if d in ("/opt", "/var/runtime") else set())
    assert_refused(suite, f"write {d}", allowed)


def test_own_code_not_writable_but_tmp_is(suite):
    assert_refused(suite, "write existing bootstrap", READONLY)
    tmp = outcome(suite, "write /tmp")
    assert tmp["ok"], tmp


def test_tmp_is_limited_to_ephemeral_storage(suite):
    body = assert_refused(suite, "fill_tmp", {"ENOSPC"})
    written = body["detail"]["written_bytes"]
    assert 0.9 * TMP600 * MIB <= written <= TMP600 * MIB, body
    ping = outcome(suite, "ping after fill")
    assert ping.get("pong"), ping


# --------------------------------------------------------------------------
# attacks: processes and resources


def test_server_process_unreachable(suite):
    for key in ("kill 0 server", "kill 9 server", "ptrace server"):
        assert_refused(suite, key, {"ESRCH", "EPERM"})


def test_pid_1_is_the_environments_own(suite):
    assert_refused(suite, "ptrace 1", {"EPERM"})
    # pid 1 inside is the environment's own init: signalling it is refused,
    # or ignored (an init only gets signals it handles); either way the
    # environment answers afterwards, or has been replaced.
    killed = suite.results["kill 9 pid 1"]
    assert "exception" not in killed, killed
    print(f"kill -9 1 inside: {killed}")
    ping = outcome(suite, "ping after kill")
    assert ping.get("pong"), ping


def test_fork_bomb_stops_at_pids_limit(suite):
    body = assert_refused(suite, "fork_bomb", {"EAGAIN"})
    d = body["detail"]
    assert 100 <= d["forks"] < PIDS_LIMIT, d
    assert d["reaped"] == d["forks"], d
    ping = outcome(suite, "ping after fork_bomb")
    assert ping.get("pong"), ping


def test_out_of_memory(suite):
    r = suite.results["alloc"]
    assert "exception" not in r, r
    assert r["function_error"] == "Unhandled", r
    assert isinstance(r["body"], dict) and r["body"].get("errorType") == "Runtime.OutOfMemory", r
    after = suite.results["ping after alloc"]
    first = after["attempts"][0]
    assert "exception" not in first and first["function_error"] is None, after
    assert first["body"].get("pong"), after


def test_quiet_neighbour_kept_answering(suite):
    # timing is printed by the suite fixture, never asserted
    assert suite.busy_ms, "the quiet function was never invoked during the attack suite"
    assert not suite.busy_errors, suite.busy_errors[:5]


# --------------------------------------------------------------------------
# attacks: network


def test_none_network_reaches_nothing(sbx, suite):
    own = outcome(suite, "none: own runtime api")
    assert own["ok"], f"the probe cannot reach its own Runtime API at {RUNTIME_API}: {own}"
    assert_refused(suite, "none: server port", {"ECONNREFUSED"})
    steal = assert_refused(suite, "none: steal from server port", {"ECONNREFUSED"})
    assert steal["detail"]["connected"] is False, steal
    assert_refused(suite, "none: host listener on lo", {"ECONNREFUSED"})
    for ip in suite.ctx["host_ips"]:
        assert_refused(suite, f"none: host listener on {ip}", UNREACHABLE)


def test_bridge_network_reaches_no_host_port_or_environment(suite, fns):
    _need_bridge(fns)
    own = outcome(suite, "bridge: own runtime api")
    assert own["ok"], own
    assert_refused(suite, "bridge: server port on lo", {"ECONNREFUSED"})
    steal = assert_refused(suite, "bridge: steal from server port on lo", UNREACHABLE)
    assert steal["detail"]["connected"] is False, steal
    assert_refused(suite, "bridge: host listener on lo", {"ECONNREFUSED"})
    assert suite.ctx["gateway"], "a bridge environment has no default gateway"
    # The API listens on the gateway for bridge functions (their AWS_ENDPOINT_URL), but
    # hands out no invocations and keeps the unauthenticated metrics to the host.
    metrics = outcome(suite, "bridge: api metrics on gateway")
    assert metrics["ok"] and metrics["detail"]["status_line"].split()[1] == "403", metrics
    steal = assert_refused(suite, "bridge: steal from server port on gateway", {"REFUSED"})
    assert steal["detail"]["connected"] is True and not steal["detail"]["request_id"], steal
    assert_refused(suite, "bridge: host listener on gateway", UNREACHABLE)
    for ip in suite.ctx["host_ips"]:
        assert_refused(suite, f"bridge: host listener on {ip}", UNREACHABLE)
    assert suite.ctx["peer_ip"], "the second bridge environment has no address"
    listen = outcome(suite, "peer: listen")
    assert listen["ok"], listen
    assert_refused(suite, "bridge: peer listener", UNREACHABLE)
    assert_refused(suite, "bridge: peer runtime api", UNREACHABLE)
    steal = assert_refused(suite, "bridge: steal from peer", UNREACHABLE)
    assert steal["detail"]["connected"] is False, steal
    assert outcome(suite, "peer: accepted") == {"accepted": 0}


def test_host_listener_never_reached(suite, listener):
    assert listener.accepted == [], f"environments reached a host port: {listener.accepted}"


def test_host_network_refused_without_flag(sbx, fns):
    name = h.uniq("sbx-host")
    err = h.expect_error(
        sbx.lam.create_function,
        FunctionName=name,
        Runtime="provided.al2023",
        Handler="bootstrap",
        Role=h.ROLE,
        Code={"ZipFile": h.make_zip({"bootstrap": ("#!/bin/sh\nexit 1\n", 0o755)})},
        Tags={NETWORK_TAG: "host"},
        status=400,
        codes="InvalidParameterValueException",
    )
    print(f"host network refused: {err.message}")
    h.assert_function_absent(sbx.lam, name)
    arn = sbx.lam.get_function(FunctionName=fns.none)["Configuration"]["FunctionArn"]
    h.expect_error(
        sbx.lam.tag_resource,
        Resource=arn,
        Tags={NETWORK_TAG: "host"},
        status=400,
        codes="InvalidParameterValueException",
    )
    assert sbx.lam.list_tags(Resource=arn)["Tags"].get(NETWORK_TAG) == "none"


# --------------------------------------------------------------------------
# runtimes under the sandbox

PY_APP = """
import os, sys
import sbx_layer_mod


def handler(event, context):
    with open("/opt/data/hello.txt") as f:
        layer_file = f.read()
    return {
        "uid": os.getuid(),
        "gid": os.getgid(),
        "cwd": os.getcwd(),
        "layer_file": layer_file,
        "layer_module": sbx_layer_mod.VALUE,
        "module_file": sbx_layer_mod.__file__,
        "executable": sys.executable,
    }
"""

JS_APP = """
const fs = require('fs');
const mod = require('sbx-layer-mod');
exports.handler = async () => ({
  uid: process.getuid(),
  gid: process.getgid(),
  cwd: process.cwd(),
  layer_file: fs.readFileSync('/opt/data/hello.txt', 'utf8'),
  layer_module: mod.VALUE,
});
"""


@pytest.fixture(scope="module")
def code_layer(sbx):
    marker = f"hello from a layer {uuid.uuid4()}"
    content = h.make_zip(
        {
            "python/sbx_layer_mod.py": "VALUE = 'python layer module'\n",
            "nodejs/node_modules/sbx-layer-mod/index.js": "exports.VALUE = 'node layer module';\n",
            "data/hello.txt": marker,
        }
    )
    resp = sbx.lam.publish_layer_version(LayerName=h.uniq("sbx-layer"), Content={"ZipFile": content})
    return resp["LayerVersionArn"], marker


def _create(sbx, name, zip_bytes, runtime, handler, **kw):
    resp = sbx.lam.create_function(
        FunctionName=name, Runtime=runtime, Handler=handler, Role=h.ROLE, Code={"ZipFile": zip_bytes}, Timeout=30, **kw
    )
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 201, resp["ResponseMetadata"]
    return name


def _assert_sandboxed_runtime(body, marker):
    assert body["uid"] == SANDBOX_UID and body["gid"] == SANDBOX_GID, body
    assert body["cwd"] == "/var/task", body
    assert body["layer_file"] == marker, body


def test_python_runtime_with_layer(sbx, code_layer):
    arn, marker = code_layer
    name = _create(sbx, h.uniq("sbx-py"), h.make_zip({"app.py": PY_APP}), "python3.12", "app.handler", Layers=[arn])
    body = invoke_body(sbx, name, {})
    _assert_sandboxed_runtime(body, marker)
    assert body["layer_module"] == "python layer module", body
    assert body["module_file"].startswith("/opt/python/"), body


def test_node_runtime_with_layer(sbx, code_layer):
    arn, marker = code_layer
    code = h.make_zip({"index.js": JS_APP})
    name = _create(sbx, h.uniq("sbx-node"), code, "nodejs20.x", "index.handler", Layers=[arn])
    body = invoke_body(sbx, name, {})
    _assert_sandboxed_runtime(body, marker)
    assert body["layer_module"] == "node layer module", body


def test_rust_lambda_runtime(sbx):
    name = _create(sbx, h.uniq("sbx-rust"), h.rust_zip(), "provided.al2023", "bootstrap")
    payload = {"hello": "sandbox", "n": [1, 2, 3]}
    body = invoke_body(sbx, name, payload)
    assert body["echo"] == payload, body
    assert body["pid"] < 1000, f"not in its own PID namespace? {body}"


def _distribution_files(dist_name: str, seen: set) -> dict[str, Path]:
    """site-packages-relative path → file, for a distribution and (recursively)
    its unconditional requirements."""
    key = dist_name.lower().replace("_", "-")
    if key in seen:
        return {}
    seen.add(key)
    dist = importlib.metadata.distribution(dist_name)
    out = {}
    for f in dist.files or []:
        rel = str(f)
        if rel.startswith("..") or "__pycache__" in rel or rel.startswith("/"):
            continue
        out[rel] = Path(dist.locate_file(f))
    for req in dist.requires or []:
        if ";" in req and "extra" in req.split(";", 1)[1]:
            continue
        m = re.match(r"[A-Za-z0-9._-]+", req)
        if m:
            out.update(_distribution_files(m.group(0), seen))
    return out


RIC_APP = """
import os, sys
import awslambdaric


def handler(event, context):
    return {
        "uid": os.getuid(),
        "cwd": os.getcwd(),
        "ric_file": awslambdaric.__file__,
        "executable": sys.executable,
        "request_id": context.aws_request_id,
        "event": event,
    }
"""


def test_awslambdaric_from_a_layer(sbx):
    # python3 inside the sandbox is the host's /usr/bin/python3: awslambdaric's
    # C extension from this venv must match its version.
    try:
        host_py = subprocess.run(
            ["/usr/bin/python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
    except OSError:
        pytest.skip("no /usr/bin/python3 on this host")
    if host_py != "%d.%d" % sys.version_info[:2]:
        pytest.skip(f"/usr/bin/python3 is {host_py}, the test venv's awslambdaric is built for {sys.version_info[:2]}")
    files = _distribution_files("awslambdaric", set())
    layer = h.make_zip(
        {f"python/{rel}": (path.read_bytes(), 0o755 if rel.endswith(".so") else 0o644) for rel, path in files.items()}
    )
    arn = sbx.lam.publish_layer_version(LayerName=h.uniq("sbx-ric"), Content={"ZipFile": layer})["LayerVersionArn"]
    code = h.make_zip(
        {
            "bootstrap": ("#!/bin/sh\nexec python3 -m awslambdaric app.handler\n", 0o755),
            "app.py": RIC_APP,
        }
    )
    name = _create(
        sbx,
        h.uniq("sbx-ric"),
        code,
        "provided.al2023",
        "app.handler",
        Layers=[arn],
        Environment={"Variables": {"PYTHONPATH": "/opt/python"}},
    )
    resp, body = h.invoke(sbx.lam, name, {"ric": True})
    assert "FunctionError" not in resp, f"{body!r}\n{sbx.srv.log_tail(30)}"
    assert body["uid"] == SANDBOX_UID and body["cwd"] == "/var/task", body
    assert body["ric_file"].startswith("/opt/python/awslambdaric/"), body
    assert body["event"] == {"ric": True} and body["request_id"] == h.request_id(resp), body


# --------------------------------------------------------------------------
# execution roles under the sandbox: a bridge function calls the API with boto3

BOTO3_APP = """
import json, os
import boto3


def handler(event, context):
    out = {"endpoint": os.environ.get("AWS_ENDPOINT_URL"), "key": os.environ.get("AWS_ACCESS_KEY_ID", "")}
    client = boto3.client("lambda")
    for name in event["call"]:
        try:
            reply = client.invoke(FunctionName=name, Payload=b"{}")
            out[name] = json.loads(reply["Payload"].read())
        except Exception as exc:
            out[name] = "error: " + str(exc)
    return out
"""


def _boto3_layer(sbx) -> str:
    """boto3 and its dependencies from the test venv as a layer, as users ship it, with
    botocore's service models cut down to Lambda's to keep the zip small."""
    files = {
        rel: path
        for rel, path in _distribution_files("boto3", set()).items()
        if not re.match(r"botocore/data/(?!lambda/)[^/]+/", rel)
    }
    layer = h.make_zip({f"python/{rel}": path.read_bytes() for rel, path in files.items()})
    return sbx.lam.publish_layer_version(LayerName=h.uniq("sbx-boto3"), Content={"ZipFile": layer})["LayerVersionArn"]


def _admin(sbx, *args):
    proc = subprocess.run(
        [str(h.lambent_bin()), "--data-dir", str(sbx.srv.data_dir), "admin", *args],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, f"lambent admin {args}: {proc.stderr}"


def test_bridge_function_calls_the_api_with_its_roles_rights(sbx, fns):
    _need_bridge(fns)
    gateway = (fns.reports["bridge"].get("route") or {}).get("gateway")
    role = h.uniq("sbx-role")
    _admin(sbx, "role", "create", role)
    allowed, refused = h.uniq("sbx-callee-ok"), h.uniq("sbx-callee-no")
    for name in (allowed, refused):
        _create(sbx, name, h.make_zip({"app.py": "def handler(e, c):\n    return {'ok': True}\n"}), "python3.12", "app.handler")
    statement = {"Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": h.function_arn(allowed)}
    _admin(sbx, "policy", "attach", "--role", role, "invoke-one", json.dumps({"Version": "2012-10-17", "Statement": [statement]}))
    caller = h.uniq("sbx-caller")
    sbx.lam.create_function(
        FunctionName=caller, Runtime="python3.12", Handler="app.handler", Timeout=30, MemorySize=256,
        Role=f"arn:aws:iam::{h.ACCOUNT}:role/{role}", Code={"ZipFile": h.make_zip({"app.py": BOTO3_APP})},
        Layers=[_boto3_layer(sbx)], Tags={NETWORK_TAG: "bridge"},
    )
    body = invoke_body(sbx, caller, {"call": [allowed, refused]})
    assert body["endpoint"] == f"http://{gateway}:{sbx.srv.port}", body
    assert body["key"].startswith("ASIA"), body
    assert body[allowed] == {"ok": True}, body
    assert "AccessDeniedException" in body[refused] and f"assumed-role/{role}/{caller}" in body[refused], body


# --------------------------------------------------------------------------
# after the server stops


def test_zz_no_leftovers_after_shutdown(sbx):
    """Stops the module's server: keep this test last in the module."""
    _collect_leftovers(sbx)
    _assert_no_leftovers(sbx)
