"""Unmodified web apps behind well-known Lambda adapters, as function code.

- `express`: an Express app wrapped by `serverless-http` (npm), for the Node runtime.
- `starlette`: a Starlette (ASGI) app wrapped by `Mangum` (PyPI), run by awslambdaric.
- `powertools`: a Powertools for AWS Lambda (Python) event-handler app (PyPI), run by
  awslambdaric.

The app sources live in tests/e2e/apps/; their dependencies are fetched from the package
registries (npm, PyPI) the first time and cached outside the clone, in
`$LAMBENT_TEST_PKG_CACHE` (.ci/run points it at /var/cache), else
`~/.cache/lambent-e2e-packages`, one directory per exact dependency list. The zips are the
app plus its installed dependencies.

`web_app_functions` (a session fixture in conftest.py) deploys both once and returns their
names, so the same functions can sit behind a function URL or an HTTP API.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

APPS = Path(__file__).resolve().parent / "apps"


def package_cache() -> Path:
    root = os.environ.get("LAMBENT_TEST_PKG_CACHE") or str(Path.home() / ".cache" / "lambent-e2e-packages")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _cached(kind: str, spec: bytes, install) -> Path:
    """The directory holding `spec` installed by `install(tmp_dir)`, made once."""
    key = hashlib.sha256(kind.encode() + b"\0" + spec + b"\0" + sys.version.encode()).hexdigest()[:16]
    target = package_cache() / f"{kind}-{key}"
    if (target / ".complete").exists():
        return target
    tmp = Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=package_cache()))
    try:
        install(tmp)
        (tmp / ".complete").write_text("ok")
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _run(cmd: list[str], what: str):
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")


def node_modules() -> Path:
    """Express and serverless-http installed from npm (production dependencies only)."""
    manifest = (APPS / "express" / "package.json").read_bytes()

    def install(tmp: Path):
        (tmp / "package.json").write_bytes(manifest)
        _run(
            ["npm", "install", "--prefix", str(tmp), "--omit=dev", "--no-audit", "--no-fund",
             "--no-package-lock", "--loglevel=error"],
            "npm install of the Express app's dependencies",
        )

    return _cached("npm", manifest, install) / "node_modules"


def site_packages(app: str = "starlette") -> Path:
    """The PyPI dependencies of tests/e2e/apps/<app> (its requirements.txt) installed for
    this interpreter."""
    requirements = APPS / app / "requirements.txt"

    def install(tmp: Path):
        _run(
            [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "-q",
             "--no-compile", "--target", str(tmp / "site"), "-r", str(requirements)],
            f"pip install of the {app} app's dependencies",
        )

    return _cached("pypi", requirements.read_bytes(), install) / "site"


def _zip(entries: list[tuple[Path, Path]], extra: dict[str, tuple[str, int]]) -> bytes:
    """A zip of every file under each (directory, prefix in the zip), plus `extra` files."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for directory, prefix in entries:
            for path in sorted(directory.rglob("*")):
                if path.is_dir() or "__pycache__" in path.parts or path.name == ".complete":
                    continue
                arcname = str(prefix / path.relative_to(directory))
                info = zipfile.ZipInfo(arcname)
                info.external_attr = (0o755 if os.access(path, os.X_OK) else 0o644) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, path.read_bytes())
        for name, (text, mode) in extra.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, text)
    return buf.getvalue()


def express_zip() -> bytes:
    """index.js (handler `index.handler`, runtime nodejs20.x) with its node_modules."""
    source = (APPS / "express" / "index.js").read_text()
    return _zip([(node_modules(), Path("node_modules"))], {"index.js": (source, 0o644)})


PYTHON_BOOTSTRAP = """#!/bin/sh
# AWS's Python runtime interface client, unmodified, runs the app's handler.
exec "$LAMBENT_TEST_PYTHON" -m awslambdaric app.handler
"""


def python_app_zip(app: str) -> bytes:
    """tests/e2e/apps/<app>/app.py (runtime provided.al2023, awslambdaric through
    `bootstrap`; needs LAMBENT_TEST_PYTHON) with its dependencies at the root of the zip."""
    source = (APPS / app / "app.py").read_text()
    return _zip(
        [(site_packages(app), Path("."))],
        {"app.py": (source, 0o644), "bootstrap": (PYTHON_BOOTSTRAP, 0o755)},
    )


def starlette_zip() -> bytes:
    """The Starlette app with Starlette and Mangum."""
    return python_app_zip("starlette")


def powertools_zip() -> bytes:
    """The Powertools for AWS Lambda app (its resolver chosen by env RESOLVER)."""
    return python_app_zip("powertools")
