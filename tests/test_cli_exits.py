"""Exit codes of every `tlog` command (SPEC §7): 0 all held; 1 a failed verification or a monitor alert;
2 bad input, a refused operation or a declined prompt; 3 the log could not be reached or read. The
commands are enumerated from the click group, so a command added later is walked too."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator

import click
import orjson
import pytest
from click.testing import CliRunner

from tlog.cli import main


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, cmd in sorted(group.commands.items()):
        yield (*path, name)
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, (*path, name))


COMMANDS = list(_commands(main))


def test_the_walk_finds_the_commands_and_their_subcommands():
    assert {("verify",), ("monitor",), ("audit",), ("audit", "verify"), ("token", "list"), ("witness", "serve")} <= set(COMMANDS)


def test_the_groups_help_documents_the_exit_codes():
    res = CliRunner().invoke(main, ["--help"])
    assert res.exit_code == 0
    for line in ("0  all held", "1  a verification failed", "2  bad input, a refused operation or a declined prompt",
                 "3  the log could not be reached or read"):
        assert line in res.output


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_command_has_help_with_its_exit_status_and_a_usage_error_exits_2(path):
    res = CliRunner().invoke(main, [*path, "--help"])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())  # as wrapped for the terminal
    assert "Exit status: 0 " in text and "3 the log could not be reached or read" in text
    bad = CliRunner().invoke(main, [*path, "--no-such-option"])
    assert bad.exit_code == 2, bad.output
    assert "No such option '--no-such-option'" in bad.output and "Traceback" not in bad.output


def test_only_checking_commands_document_exit_1():
    for path in COMMANDS:
        text = " ".join(CliRunner().invoke(main, [*path, "--help"]).output.split())
        checks = path in {("verify",), ("monitor",), ("audit",), ("audit", "verify")}
        assert (" 1 " in text.split("Exit status:")[1]) == checks, path


def test_a_file_click_cannot_open_is_bad_input(tmp_path):
    res = CliRunner().invoke(main, ["append", "--db", str(tmp_path / "x.db"), "--service", "s", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "No such file or directory" in res.output


def test_a_missing_database_could_not_be_read(tmp_path):
    res = CliRunner().invoke(main, ["checkpoint", "--db", str(tmp_path / "missing.db")])
    assert res.exit_code == 3 and res.output == f"error: no tlog database at {tmp_path / 'missing.db'} (run `tlog init` first)\n"


def test_a_refused_operation_exits_2_and_with_json_says_so_in_json(tmp_path):
    db = tmp_path / "tlog.db"
    assert CliRunner().invoke(main, ["init", "--db", str(db)]).exit_code == 0
    res = CliRunner().invoke(main, ["init", "--db", str(db)])
    assert res.exit_code == 2 and "refusing to overwrite" in res.output
    bad = CliRunner().invoke(main, ["verify", "--url", "http://127.0.0.1:9/", "--json"])
    assert bad.exit_code == 2
    answer = orjson.loads(bad.stdout)
    assert answer["ok"] is False and answer["exit"] == 2 and "--url needs --vkey" in answer["error"]


def test_an_unreachable_log_exits_3_and_a_malformed_key_2(tmp_path):
    db = tmp_path / "tlog.db"
    vkey = CliRunner().invoke(main, ["init", "--db", str(db), "--origin", "exits.example/log"]).stdout.split()[-1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        res = CliRunner().invoke(main, ["verify", "--url", f"http://127.0.0.1:{port}/", "--vkey", vkey, "-q"])
        assert res.exit_code == 3 and "gave up after" in res.output, res.output
        res = CliRunner().invoke(main, ["verify", "--url", f"http://127.0.0.1:{port}/", "--vkey", "x+00000000+AQ", "-q"])
        assert res.exit_code == 2 and "bad verifier key" in res.output, res.output


def test_a_busy_port_exits_3(tmp_path):
    db = tmp_path / "tlog.db"
    assert CliRunner().invoke(main, ["init", "--db", str(db)]).exit_code == 0
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = subprocess.run([sys.executable, "-m", "tlog.cli", "serve", "--db", str(db), "--port", str(port)],
                             capture_output=True, text=True, timeout=60)
    assert out.returncode == 3, out.stderr
    assert "Traceback" not in out.stderr and "address already in use" in out.stderr.lower()


def test_the_remote_forms_of_append_stats_and_export_exit_3_when_the_log_is_unreachable(tmp_path):
    db = tmp_path / "tlog.db"
    vkey = CliRunner().invoke(main, ["init", "--db", str(db)]).stdout.split()[-1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/"  # bound, not listening: refused
        for args in (["append", "--url", url, "--vkey", vkey, "--token", "tlog_x", "-"], ["stats", "--url", url],
                     ["export", "--url", url]):
            res = CliRunner().invoke(main, args, input='{"event_id": "e-1"}\n')
            assert res.exit_code == 3 and "Traceback" not in res.output, (args, res.output)


def test_bad_input_to_stats_policy_diff_export_and_erase_exits_2(tmp_path):
    db = str(tmp_path / "tlog.db")
    assert CliRunner().invoke(main, ["init", "--db", db]).exit_code == 0
    for args, says in ((["stats", "--db", db, "--purpose", "recomendation"], "use one of"),
                       (["policy", "diff", "--db", db, "default", "nope"], "no published policy 'nope'"),
                       (["export", "--db", db, "--format", "csv"], "add --public"),
                       (["erase", "--db", db, "--artist", "sc:user:1", "--reason", "sc:user:1"], "--reason")):
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 2 and says in res.output and "Traceback" not in res.output, (args, res.output)
    res = CliRunner().invoke(main, ["stats", "--db", db, "--phase", "nope", "--json"])
    assert res.exit_code == 2 and orjson.loads(res.stdout)["exit"] == 2
