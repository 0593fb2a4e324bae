"""`tlog key list|rotate|retire`: change the log's signing key without a new log and without downtime."""

from __future__ import annotations

from pathlib import Path

import click

from .cli_options import db_option
from .log import open_log


@click.group()
def key() -> None:
    """Rotate the log's signing key.

    \b
    A rotation has three steps, and the log serves throughout:
      tlog key rotate              add a key; checkpoints now carry both signatures
      (publish the new verifier key: clients, monitors and witnesses add it, e.g.
       tlog witness serve … --log OLD --log NEW)
      tlog key retire OLD          stop signing with the old key
    A running `tlog serve` picks up each step within a second.
    """


@key.command("list")
@db_option
def list_keys(db: Path) -> None:
    """Print the log's active verifier keys, one a line, the primary first."""
    with open_log(db, readonly=True) as log:
        for v in log.verifiers:
            click.echo(v.key)


@key.command("rotate")
@db_option
def rotate(db: Path) -> None:
    """Add a new signing key (a new file beside the database, mode 0600; no key is ever overwritten).

    From now on every checkpoint is signed by all active keys, and every stored checkpoint gains a
    signature by the new key, so the log's whole history verifies under it. Verifiers ignore
    signatures by keys they do not know, so nobody breaks. Prints the new verifier key alone on the
    last line."""
    with open_log(db, secrets_needed=True) as log:
        signer = log.rotate_key()
        click.echo(f"checkpoints of {log.origin} are now signed by {len(log.signers)} keys; publish the new "
                   f"one, then retire the old one with `tlog key retire OLD-KEY`", err=True)
        click.echo(signer.verifier_key)


@key.command("retire")
@db_option
@click.argument("vkey")
def retire(db: Path, vkey: str) -> None:
    """Stop signing with the active key VKEY (a verifier key, as `tlog key list` prints it).

    The remaining keys first sign every stored checkpoint that lacks their signature, so the history
    still verifies without VKEY. Refuses to retire the last key. The retired key's file is left in
    place: destroy it once no process uses it."""
    with open_log(db, secrets_needed=True) as log:
        log.retire_key(vkey)
        click.echo(f"retired {vkey}; checkpoints are now signed by:", err=True)
        for v in log.verifiers:
            click.echo(v.key)
