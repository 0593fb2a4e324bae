"""`tlog witness init|serve|status`: run a c2sp.org/tlog-witness witness for one or more logs."""

from __future__ import annotations

from pathlib import Path

import click

from ..note import b64encode
from .store import init_witness, key_path, open_witness

witness_db = click.option(
    "--db", "db", required=True, type=click.Path(dir_okay=False, path_type=Path),
    help="The witness's SQLite database; its key file sits beside it (W.db → W.witness.key).",
)


@click.group()
def witness() -> None:
    """Run a witness: cosign other logs' checkpoints, but only while they stay append-only.

    \b
    A witness remembers the last checkpoint it cosigned for each log and cosigns a new one only with
    a valid consistency proof from it (c2sp.org/tlog-witness), so a log that shows two histories
    (a split view) cannot get both cosigned by the same witness.
      tlog witness init --db w.db --name witness.example/w1
      tlog witness serve --db w.db --port 7380 --log example.com/log+8a1b2c3d+AW…
    (--log takes the verifier key that `tlog init` printed for the log.)
    """


@witness.command("init")
@witness_db
@click.option("--name", required=True, help="The witness's key name, e.g. witness.example/w1 (no spaces, no '+').")
def init(db: Path, name: str) -> None:
    """Create a witness: its database (mode 0600) and its Ed25519 cosigning key beside it (mode 0600).
    Prints the witness's verifier key (NAME+hex8+base64(0x04‖key)) alone on the last line: give it to
    the logs that want its cosignatures, for their witness policy files."""
    w = init_witness(db, name)
    try:
        click.echo(f"created witness {name} in {db}; its key is in {key_path(db)} (keep it secret)", err=True)
        click.echo(w.vkey)
    finally:
        w.close()


@witness.command("serve")
@witness_db
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=7380, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
@click.option("--log", "logs", multiple=True, required=True, metavar="VKEY",
              help="A log to witness, by its verifier key (its name is the log's origin). Repeat for more "
                   "logs, or for two keys of one log while it rotates them.")
@click.option("--replay", "replays", multiple=True, metavar="[ORIGIN=]URL",
              help="Cosign a tlog log's checkpoint only after replaying the public leaves it adds, fetched from "
                   "the log served at URL (map roots, artist chains, checkpoints at map leaves, the policy each "
                   "use names). ORIGIN= may be left out when one log is witnessed.")
def serve(db: Path, host: str, port: int, logs: tuple[str, ...], replays: tuple[str, ...]) -> None:
    """Serve POST /add-checkpoint (c2sp.org/tlog-witness) for the logs named by --log.

    \b
    Answers: 200 with a cosignature/v1 line; 404 unknown log; 403 not signed by its key; 400 malformed
    or old size beyond the checkpoint; 409 with the size this witness last cosigned (text/x.tlog.size)
    when the request starts elsewhere, or when another root was cosigned at that size; 422 when the
    consistency proof fails, or (with --replay) when the leaves the checkpoint adds break a rule of the
    public log; 503 when the log's tiles cannot be read to replay them. Refusals of validly signed
    checkpoints are kept in the database as evidence.

    \b
    A checking witness for one tlog log served at http://127.0.0.1:8080/:
      tlog witness serve --db w.db --log example.com/log+8a1b2c3d+AW… --replay http://127.0.0.1:8080/
    """
    from .replay import replayers
    from .server import log_keys, run_witness  # aiohttp: only for the command that serves

    trusted = log_keys(logs)
    replay = replayers(_replay_urls(replays, sorted(trusted)))
    w = open_witness(db)
    run_witness(w, trusted, host=host, port=port, replay=replay)


def _replay_urls(values: tuple[str, ...], origins: list[str]) -> dict[str, str]:
    """{origin: URL} from --replay values: ORIGIN=URL, or a bare URL when one log is witnessed."""
    urls: dict[str, str] = {}
    for value in values:
        origin, sep, url = value.partition("=")
        if not sep or "://" in origin:  # a bare URL (its query may hold "=")
            if len(origins) != 1:
                raise click.BadParameter(f"{value!r}: name the log, ORIGIN=URL, when witnessing several logs",
                                         param_hint="--replay")
            origin, url = origins[0], value
        if origin not in origins:
            raise click.BadParameter(f"{origin!r} is not a log given with --log", param_hint="--replay")
        if not url.startswith(("http://", "https://")):
            raise click.BadParameter(f"{url!r} is not an http(s) URL", param_hint="--replay")
        urls[origin] = url
    return urls


@witness.command("status")
@witness_db
def status(db: Path) -> None:
    """Print the witness's key, the latest checkpoint it cosigned for each log, and any refusals kept as
    evidence of a log showing two histories."""
    w = open_witness(db)
    try:
        click.echo(f"witness {w.vkey}")
        for origin, state in w.store.logs().items():
            click.echo(f"log {origin} size {state.size} root {b64encode(state.root)}")
        for r in w.store.refusals():
            click.echo(f"refused {r.origin} ({r.status}) at {r.received_ms} ms: {r.reason}")
    finally:
        w.close()
