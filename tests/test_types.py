"""The package type-checks under the project's mypy settings (pyproject.toml: strict, less warn_return_any),
and pyflakes finds no unused import, undefined name or dead assignment in the package or its scripts.
A failure prints what the checker said."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_the_package_type_checks():
    done = _run("mypy", "--cache-dir", str(ROOT / ".mypy_cache"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Success: no issues found" in done.stdout


def test_pyflakes_finds_nothing_in_the_package_and_its_scripts():
    done = _run("pyflakes", "tlog", "scripts")
    assert done.returncode == 0 and not done.stdout, done.stdout + done.stderr
