"""The `gocheck` fixture: tests/interop/gocheck, a small Go program over golang.org/x/mod/sumdb/note and
sumdb/tlog, built once per session (and cached by source hash), offline, against the Debian copy of
golang.org/x/mod. Without Go it installs it when CI=true or TLOG_INSTALL_GO=1 (scripts/install-go-interop),
and skips otherwise. Shared by every interop module here."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
XMOD = Path("/usr/share/gocode/src/golang.org/x/mod")

GoCheck = Callable[..., Any]


def _tools_present() -> bool:
    return shutil.which("go") is not None and (XMOD / "sumdb" / "note").is_dir()


def _ensure_tools() -> None:
    if _tools_present():
        return
    if os.environ.get("CI") != "true" and os.environ.get("TLOG_INSTALL_GO") != "1":
        pytest.skip("Go interop needs go and golang.org/x/mod: run scripts/install-go-interop or set TLOG_INSTALL_GO=1")
    done = subprocess.run([str(REPO / "scripts" / "install-go-interop")], capture_output=True, text=True)
    if done.returncode != 0 or not _tools_present():
        pytest.fail(f"scripts/install-go-interop failed:\n{done.stdout}\n{done.stderr}")


def _cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Inside the virtualenv when there is one, so the binary survives between sessions."""
    if sys.prefix != sys.base_prefix:
        return Path(sys.prefix) / "cache" / "gocheck"
    return tmp_path_factory.getbasetemp() / "gocheck"


@pytest.fixture(scope="session")
def gocheck(tmp_path_factory: pytest.TempPathFactory) -> GoCheck:
    _ensure_tools()
    sources = {name: (HERE / "gocheck" / name).read_bytes() for name in ("main.go", "go.mod")}
    version = subprocess.run(["go", "version"], capture_output=True, check=True).stdout
    key = hashlib.sha256(version + b"".join(sources[n] for n in sorted(sources))).hexdigest()[:16]
    cache = _cache_dir(tmp_path_factory)
    binary = cache / f"gocheck-{key}"
    if not binary.exists():
        # Build from a copy: with -mod=mod, go may rewrite go.mod, and the checkout must stay untouched.
        src = tmp_path_factory.mktemp("gocheck-src")
        for name, data in sources.items():
            (src / name).write_bytes(data)
        env = {
            **os.environ,
            "GO111MODULE": "on",
            "GOFLAGS": "-mod=mod",
            "GOPROXY": "off",
            "GOTOOLCHAIN": "local",
            "GOWORK": "off",
            "GOCACHE": str(cache / "go-build"),
            "GOPATH": str(cache / "gopath"),
        }
        partial = cache / f"gocheck-{key}.tmp"
        command = ["go", "build", "-o", str(partial), "."]
        built = subprocess.run(command, cwd=src, env=env, capture_output=True, text=True)
        if built.returncode != 0:
            pytest.fail(f"building tests/interop/gocheck failed:\n{built.stderr}")
        partial.replace(binary)
        for stale in cache.glob("gocheck-*"):  # builds of older sources
            if stale != binary:
                stale.unlink()

    def run(*args: str, stdin: bytes = b"", ok: bool = True) -> Any:
        """Run a gocheck command; JSON output is decoded. With ok=False, expect failure and return stderr."""
        done = subprocess.run([str(binary), *args], input=stdin, capture_output=True, timeout=60)
        if not ok:
            assert done.returncode != 0, f"gocheck {args[0]} accepted what it should refuse"
            return done.stderr.decode()
        assert done.returncode == 0, f"gocheck {args[0]} failed: {done.stderr.decode()}"
        return done.stdout if args[0] == "sign-note" else json.loads(done.stdout)

    return run
