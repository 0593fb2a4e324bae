"""A real `tlog serve` with a token for every role, made by the CLI as an operator makes them, for the
fuzzing and access-control tests: no token, a wrong one, a revoked one, a service, two artists and an
auditor. The server's output is drained into memory as it comes (a full pipe would stall the server)
so tests can check it for tracebacks and secrets."""

from __future__ import annotations

import subprocess
import sys
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from tlog.demo import build_demo

from .conftest import Server, start_server

ROLES = ("none", "wrong", "revoked", "service", "artist_a", "artist_b", "auditor")
SERVICE = "recsys"
ARTIST_A = "sc:user:alice"  # distinctive: a leak is a substring search away
ARTIST_B = "sc:user:bob"
WRONG = "tlog_" + "A" * 43  # well-formed, never issued


def cli(db: Path, *args: str) -> tuple[str, str]:
    """Runs `tlog ARGS --db DB`; (last line of stdout, stderr)."""
    out = subprocess.run([sys.executable, "-m", "tlog.cli", *args, "--db", str(db)],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1], out.stderr


def make_token(db: Path, *args: str) -> tuple[str, int]:
    """A new token (as `tlog token create` prints it, alone on the last line) and its id."""
    token, err = cli(db, "token", "create", *args)
    return token, int(err.split("token ", 1)[1].split(":", 1)[0])


def record(event_id: str, artist_id: str, **kw: Any) -> dict[str, Any]:
    return {"event_id": event_id, "content_id": f"sc:track:{artist_id.rsplit(':', 1)[-1]}-1", "artist_id": artist_id,
            "purpose": "recommendation", "phase": "inference",
            "system": {"id": "recs-ranker", "model": "ranker", "version": "1"},
            "occurred_at": "2026-01-01T00:00:00Z", **kw}


@dataclass
class RoleEnv:
    server: Server
    tokens: dict[str, str | None]
    output: list[str] = field(default_factory=list)
    _drain: threading.Thread | None = None
    indexes: dict[str, int] = field(default_factory=dict)  # a leaf of each artist, logged by SERVICE

    @property
    def url(self) -> str:
        return self.server.url

    def headers(self, role: str) -> dict[str, str]:
        token = self.tokens[role]
        return {"Authorization": f"Bearer {token}"} if token else {}

    def call(self, method: str, path: str, role: str = "none", body: Any = None, *, raw: bytes | None = None,
             content_type: str = "application/json", headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        data = raw if raw is not None else (orjson.dumps(body) if body is not None else None)
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={**self.headers(role), **(headers or {})})
        if data is not None:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def state(self) -> tuple[bytes, int]:
        """What a rejected request must not change: the signed checkpoint and the log's size."""
        status, _, note = self.call("GET", "/checkpoint", "auditor")
        assert status == 200
        return note, orjson.loads(self.call("GET", "/v1/log", "auditor")[2])["size"]

    def stop(self) -> str:
        self.server.proc.terminate()
        try:
            self.server.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.server.proc.kill()
            self.server.proc.wait()
        if self._drain is not None:
            self._drain.join(timeout=10)
        return "".join(self.output)

    def stop_clean(self) -> None:
        """`stop`, then what the server printed must hold no traceback and none of the tokens it was shown
        (secrets are never logged)."""
        out = self.stop()
        assert "Traceback" not in out, out[-3000:]
        for token in self.tokens.values():
            assert not token or token not in out


def start_env(tmp: Path, *serve_args: str, demo_records: int = 40) -> RoleEnv:
    """A demo log with a use logged for each of the two artists, and every role's token."""
    db = tmp / "tlog.db"
    build_demo(str(db), demo_records)
    revoked, revoked_id = make_token(db, "--service", SERVICE)  # the same service: only the revocation differs
    tokens: dict[str, str | None] = {
        "none": None,
        "wrong": WRONG,
        "revoked": revoked,
        "service": make_token(db, "--service", SERVICE)[0],
        "artist_a": make_token(db, "--artist", ARTIST_A)[0],
        "artist_b": make_token(db, "--artist", ARTIST_B)[0],
        "auditor": make_token(db, "--auditor")[0],
    }
    cli(db, "token", "revoke", str(revoked_id))
    server = start_server(db, *serve_args)
    env = RoleEnv(server, tokens)

    def drain() -> None:
        assert server.proc.stdout is not None
        for line in iter(server.proc.stdout.readline, b""):
            env.output.append(line.decode(errors="replace"))

    env._drain = threading.Thread(target=drain, daemon=True)
    env._drain.start()
    for name, artist in (("artist_a", ARTIST_A), ("artist_b", ARTIST_B)):
        status, _, body = env.call("POST", "/v1/uses", "service", record(f"roles-{artist.rsplit(':', 1)[-1]}", artist))
        assert status == 200, body
        env.indexes[name] = orjson.loads(body)["results"][0]["index"]
    return env
