"""The sandbox over many environments, and where it cannot run.

- Hundreds of environments come and go (each invoke crashes its runtime, so
  the next one gets a new sandbox): cgroups, network namespaces, veth pairs,
  mounts and the server's open descriptors stay bounded while it runs and
  are all gone after a clean shutdown.
- Without root, `lambent serve` refuses to start sandboxed and says what is
  missing and what to do; `--sandbox=none` starts and says so loudly.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

import helpers as h

ENVIRONMENTS = 200


def lambent_cgroups(server_pid: int) -> list[str]:
    found = []
    for controller in ("memory", "pids", "cpu"):
        root = Path("/sys/fs/cgroup") / controller / "lambent" / str(server_pid)
        if root.is_dir():
            found += [str(p) for p in root.iterdir() if p.is_dir()]
    return found


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def host_mounts() -> int:
    with open("/proc/self/mountinfo") as f:
        return sum(1 for _ in f)


def veths(bridge: str) -> list[str]:
    out = subprocess.run(["ip", "-o", "link", "show", "master", bridge], capture_output=True, text=True)
    return [line.split(":")[1].strip().split("@")[0] for line in out.stdout.splitlines() if ":" in line]


def test_hundreds_of_environments_leave_nothing_behind(tmp_path):
    mounts_before = host_mounts()
    srv = h.start_server(tmp_path / "data", tmp_path / "server.log", extra_args=["--sandbox", "namespaces"])
    try:
        churn(srv, mounts_before)
    finally:
        if srv.proc.poll() is None:
            srv.terminate(30)


def churn(srv, mounts_before: int) -> None:
    bridge = f"lbt{srv.port}"
    lam = srv.client(read_timeout=60)
    name = h.uniq("churn")
    code = h.make_zip({"app.py": "import os\n\ndef handler(event, context):\n    os._exit(1)\n"})
    lam.create_function(
        FunctionName=name, Runtime="python3.12", Handler="app.handler", Role=h.ROLE, Code={"ZipFile": code}
    )
    h.invoke(lam, name, {})
    time.sleep(1)  # the prepared environments are made
    fds_start = open_fds(srv.proc.pid)
    cgroups_start = len(lambent_cgroups(srv.proc.pid))
    began = time.monotonic()
    for _ in range(ENVIRONMENTS):
        resp, body = h.invoke(lam, name, {})
        assert body["errorType"] == "Runtime.ExitError", body
    elapsed = time.monotonic() - began
    time.sleep(2)  # the last environments' cleanup
    cgroups_end = lambent_cgroups(srv.proc.pid)
    fds_end = open_fds(srv.proc.pid)
    print(
        f"{ENVIRONMENTS} environments in {elapsed:.1f}s; cgroup dirs {cgroups_start} -> {len(cgroups_end)}; "
        f"server fds {fds_start} -> {fds_end}; veths on {bridge}: {len(veths(bridge))}"
    )
    # Prepared environments (4) and their network namespaces are all that may be held.
    assert len(cgroups_end) <= cgroups_start + 3, cgroups_end
    assert fds_end <= fds_start + 20, f"descriptors leak: {fds_start} -> {fds_end}"
    assert len(veths(bridge)) <= 12, veths(bridge)
    assert host_mounts() == mounts_before, "an environment's mounts leaked into the host's namespace"
    assert srv.terminate(30) == 0
    assert lambent_cgroups(srv.proc.pid) == []
    assert not Path(f"/sys/fs/cgroup/memory/lambent/{srv.proc.pid}").exists()
    ip = subprocess.run(["ip", "link", "show", bridge], capture_output=True, text=True)
    assert ip.returncode != 0, f"bridge {bridge} outlived the server"
    assert host_mounts() == mounts_before


def become_nobody():
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)


@pytest.fixture
def open_dir():
    """A directory user nobody can use (pytest's own are private to root)."""
    path = Path(tempfile.mkdtemp(prefix="lambent-nobody-"))
    os.chmod(path, 0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_without_root_the_server_refuses_to_run_unsandboxed_silently(open_dir):
    result = subprocess.run(
        [str(h.lambent_bin()), "serve", "--data-dir", str(open_dir / "data"), "--listen",
         f"127.0.0.1:{h.free_port()}", "--http-listen", f"127.0.0.1:{h.free_port()}"],
        preexec_fn=become_nobody,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "cannot sandbox functions" in result.stderr, result.stderr
    assert "not running as root" in result.stderr, result.stderr
    assert "--sandbox=none" in result.stderr, result.stderr


def test_sandbox_none_says_so_loudly(open_dir):
    proc = subprocess.Popen(
        [str(h.lambent_bin()), "serve", "--data-dir", str(open_dir / "data"), "--listen",
         f"127.0.0.1:{h.free_port()}", "--http-listen", f"127.0.0.1:{h.free_port()}", "--sandbox", "none"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=become_nobody,
    )
    try:
        lines = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "listening on" in line:
                break
        output = "".join(lines)
        assert "listening on" in output, output
        assert "sandbox: NONE" in output and "Development only" in output, output
    finally:
        proc.terminate()
        proc.wait(20)


@pytest.mark.parametrize("bad", ["wide-open", "host"])
def test_network_tag_values_are_checked(tmp_path, bad):
    srv = h.start_server(tmp_path / "data", tmp_path / "server.log", extra_args=["--sandbox", "namespaces"])
    try:
        lam = srv.client()
        with pytest.raises(lam.exceptions.InvalidParameterValueException) as err:
            lam.create_function(
                FunctionName=h.uniq("net"), Runtime="python3.12", Handler="app.handler", Role=h.ROLE,
                Code={"ZipFile": h.make_zip({"app.py": "def handler(e, c):\n    return 1\n"})},
                Tags={"lambent:network": bad},
            )
        assert "lambent:network" in str(err.value)
        name = h.uniq("net")
        lam.create_function(
            FunctionName=name, Runtime="python3.12", Handler="app.handler", Role=h.ROLE,
            Code={"ZipFile": h.make_zip({"app.py": "def handler(e, c):\n    return 1\n"})},
        )
        arn = lam.get_function(FunctionName=name)["Configuration"]["FunctionArn"]
        with pytest.raises(lam.exceptions.InvalidParameterValueException):
            lam.tag_resource(Resource=arn, Tags={"lambent:network": bad})
        lam.tag_resource(Resource=arn, Tags={"lambent:network": "none"})
    finally:
        srv.terminate(30)
