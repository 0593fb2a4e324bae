"""Key rotation: a new signer key beside the first, both signing, the old one retired, the log's history
verifiable under whichever keys are active, and a running reader picking the change up."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from tlog import log as log_module
from tlog.checkpoint import open_checkpoint
from tlog.cli import main
from tlog.errors import StorageError, ValidationError
from tlog.log import LocalLog, open_log, rotated_key_path
from tlog.note import Verifier, generate_key, parse_note
from tlog.verify import verify_log

from .conftest import append, records


def all_checkpoints_verify(log: LocalLog, verifier: Verifier) -> bool:
    for size in log.store.checkpoint_sizes():
        open_checkpoint(log.store.checkpoint_at(size), [verifier])  # raises if not
    return True


def signer_hashes(note: bytes) -> list[int]:
    return [s.key_hash for s in parse_note(note)[1]]


def test_rotate_then_retire(log: LocalLog) -> None:
    old = log.verifier
    append(log.sequencer(), records(5))
    signer = log.rotate_key()
    new = Verifier.from_key(signer.verifier_key)
    path = rotated_key_path(log.path, signer.key_hash)
    assert path.name == f"tlog.signer.{signer.key_hash:08x}.key" and path.stat().st_mode & 0o777 == 0o600
    assert [v.key for v in log.verifiers] == [old.key, new.key]
    assert all_checkpoints_verify(log, new)  # the history gained the new key's signature

    append(log.sequencer(), records(3, seed=2))
    assert signer_hashes(log.store.latest_checkpoint()) == [old.key_hash, new.key_hash]
    reopened = open_log(log.path, secrets_needed=True)
    assert [s.verifier_key for s in reopened.signers] == [old.key, new.key]
    reopened.close()

    log.retire_key(old.key)
    assert [v.key for v in log.verifiers] == [new.key] and log.verifier == new
    append(log.sequencer(), records(2, seed=3))
    assert signer_hashes(log.store.latest_checkpoint()) == [new.key_hash]
    assert all_checkpoints_verify(log, new)
    assert verify_log(log).size == log.store.size()  # the fsck, under the new key alone


def test_retire_refuses_the_last_key_and_unknown_keys(log: LocalLog) -> None:
    with pytest.raises(ValidationError, match="only key"):
        log.retire_key(log.verifier.key)
    with pytest.raises(ValidationError, match="not an active key"):
        log.retire_key(generate_key("test.tlog.example/log")[1])


def test_rotate_never_overwrites_a_key_file(log: LocalLog, monkeypatch: pytest.MonkeyPatch) -> None:
    skey, vkey = generate_key(log.origin)
    monkeypatch.setattr(log_module, "generate_key", lambda name: (skey, vkey))
    from tlog.note import Signer

    target = rotated_key_path(log.path, Signer.from_key(skey).key_hash)
    target.write_text("precious\n")
    with pytest.raises(FileExistsError):
        log.rotate_key()
    assert target.read_text() == "precious\n" and len(log.verifiers) == 1


def test_a_listed_key_without_its_file_is_an_error(log: LocalLog) -> None:
    signer = log.rotate_key()
    rotated_key_path(log.path, signer.key_hash).unlink()
    with pytest.raises(StorageError, match="no signer key file"):
        open_log(log.path, secrets_needed=True)


def test_a_running_reader_and_its_sequencer_pick_up_a_rotation(log: LocalLog) -> None:
    server = open_log(log.path, secrets_needed=True)  # as `tlog serve` holds it
    seq = server.sequencer()
    signer = log.rotate_key()  # as `tlog key rotate`, another process
    assert server.reload_keys() and not server.reload_keys()
    assert [v.key for v in server.verifiers][-1] == signer.verifier_key
    append(seq, records(2))
    assert len(parse_note(server.store.latest_checkpoint())[1]) == 2
    server.close()


def test_key_commands(tmp_path: Path) -> None:
    runner = CliRunner()
    db = str(tmp_path / "tlog.db")
    first = runner.invoke(main, ["init", "--db", db, "--origin", "keys.example/log"]).stdout.split()[-1]
    res = runner.invoke(main, ["key", "rotate", "--db", db])
    assert res.exit_code == 0, res.output
    second = res.stdout.split()[-1]
    assert runner.invoke(main, ["key", "list", "--db", db]).stdout.split() == [first, second]
    res = runner.invoke(main, ["key", "retire", "--db", db, first])
    assert res.exit_code == 0 and res.stdout.split() == [second]
    res = runner.invoke(main, ["key", "retire", "--db", db, second])
    assert res.exit_code == 2 and "error: refusing to retire the log's only key" in res.output
    assert runner.invoke(main, ["verify", "--db", db, "--vkey", second, "-q"]).exit_code == 0


def test_the_vrf_key_file_must_be_the_one_the_log_committed_to(log: LocalLog, tmp_path: Path) -> None:
    """The VRF key never changes for the life of a log (SPEC §2.2): a key file swapped for another log's
    would give every artist a second tag, so opening the log with secrets refuses it; so does a file
    that is not a 32-byte hex secret. Without secrets the log still opens for reading."""
    from tlog.log import init_log, key_paths

    other = init_log(tmp_path / "other" / "tlog.db", "other.example/log")
    other.close()
    path = key_paths(log.path)[1]
    assert path.name == "tlog.vrf.key" and log.vrf is not None and log.vrf.pk == log.vrf_key
    ours = path.read_text()
    path.write_text(key_paths(other.path)[1].read_text())
    with pytest.raises(StorageError, match="not the VRF key this log committed to"):
        open_log(log.path, secrets_needed=True)
    path.write_text("not hex\n")
    with pytest.raises(StorageError, match="32-byte hex VRF secret"):
        open_log(log.path, secrets_needed=True)
    path.write_text(ours)
    reader = open_log(log.path, readonly=True)
    assert reader.vrf_key == log.vrf.pk
    reader.close()
    writer = open_log(log.path, secrets_needed=True)
    assert writer.vrf is not None and writer.vrf.pk == log.vrf.pk
    writer.close()
