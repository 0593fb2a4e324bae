"""server/appender.py: handlers change the log only through an Appender, never the sequencer itself."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import tlog.server
from tlog.errors import Unavailable
from tlog.server.appender import ReadOnly

SERVER = Path(tlog.server.__file__).parent
# The modules that may know how this process writes: the appenders (appender.py; cluster.py, a front end
# of a PostgreSQL log that sequences in its term), and the factory that builds them.
BUILDERS = {"appender.py", "cluster.py", "app.py"}
WRITER_MODULES = {"committer", "sequencer", "intake", "store.writer"}


def _imported(tree: ast.AST) -> set[str]:
    return {node.module.lstrip(".") for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}


@pytest.mark.parametrize("path", sorted(p for p in SERVER.glob("*.py") if p.name not in BUILDERS), ids=lambda p: p.name)
def test_handlers_never_reach_the_sequencer(path: Path) -> None:
    tree = ast.parse(path.read_text())
    assert not _imported(tree) & WRITER_MODULES, path.name
    reached = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)} & {"sequencer", "committer", "intake"}
    assert not reached, (path.name, reached)


async def test_a_read_only_server_changes_nothing() -> None:
    ro = ReadOnly()
    changes = [ro.append_uses("svc", b"{}", max_records=1), ro.set_preferences("sc:user:1", {}, by="artist", service=None, patch=False),
               ro.set_content_artists("sc:track:1", ["sc:user:1"], service="svc"),
               ro.add_token("artist", "sc:user:1", bytes(32), 0, expires_ms=None), ro.add_feed_key("sc:user:1", bytes(32), 0),
               ro.revoke_feed_key("sc:user:1", 1, 0)]
    for change in changes:
        with pytest.raises(Unavailable, match="read-only"):
            await change
    assert ro.stats() is None and ro.recent_maps() == {}
