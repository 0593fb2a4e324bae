"""`tlog audit`: an artist fetches its audit bundle page by page and verifies it as it arrives; `tlog audit
verify` checks a saved one offline. The checks are audit.py's; this module fetches, remembers and prints.

Exit codes (SPEC §7, mapped by cli.TlogGroup from the errors' types): 0 everything held; 1 a check failed
(VerificationError: the verdict names what and where); 2 bad input (arguments, files, a state or bundle
that is not one); 3 the log could not be reached or read (down, 401, 403, 404). `--state DIR` keeps, per log and artist, the last checkpoint verified and the head there: the next run
asks only for what is new (`since=`), proves the log still extends what was verified, and refuses to go
back. The state file is replaced atomically (write, fsync, rename), mode 0600.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import IO
from urllib.parse import quote

import click
import orjson

from .audit import AuditReport, AuditState, AuditWalk
from .canonical import loads_strict
from .cli_options import EXITS_CHECKING, json_option, token_options, witness_quorum_option
from .errors import NotFound, Unreachable, ValidationError, VerificationError
from .files import private_dir, write_private
from .note import Verifier
from .remote import TileClient
from .witness.quorum import WitnessQuorum, load_witness_quorum



@click.group("audit", invoke_without_command=True, epilog=EXITS_CHECKING)
@click.option("--url", default=None, help="The log server.")
@click.option("--vkey", default=None, help="The log's verifier key you trust (from the operator's published records).")
@click.option("--artist", "artist_id", default=None, help="Your artist id.")
@token_options("Your artist token")
@click.option("--state", "state_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Remember what was verified here (created if missing): the next run fetches only what is new.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Save the fetched bundle (a list of pages for a long history), to check again with `tlog audit verify`.")
@witness_quorum_option("the checkpoint must carry its quorum's cosignatures.")
@json_option("Print the report as JSON: the verdict, and the uses by track, purpose and month.")
@click.pass_context
def audit(ctx: click.Context, url: str | None, vkey: str | None, artist_id: str | None, token: str | None,
          state_dir: Path | None, out: Path | None, quorum_file: Path | None,
          as_json: bool) -> None:
    """Fetch and verify everything logged about your content, with proofs.

    Checks the checkpoint's signature with the key you name, that every entry is in the log and matches
    its public leaf, that your tag is yours (VRF proof), that your chain has no gap, that every decision
    follows from the policy in effect and your preferences, and, by the log's artist map, that nothing
    about you was left out. Prints the verdict, then what was logged: by track, by purpose and by month,
    with dates and the systems that used your content.

    \b
    Examples:
      tlog audit --url https://log.example --vkey 'log.example+1234abcd+AU…' --artist sc:user:42 --token-file t --state ~/.tlog
      tlog audit verify me.json --vkey 'log.example+1234abcd+AU…'
    """
    if ctx.invoked_subcommand is not None:
        return
    missing = [n for n, v in (("--url", url), ("--vkey", vkey), ("--artist", artist_id), ("--token", token)) if not v]
    if missing:
        raise ValidationError(f"missing {', '.join(missing)} (or check a saved bundle with `tlog audit verify FILE --vkey V`)")
    verifier = Verifier.from_key(vkey)  # type: ignore[arg-type]
    state = _load_state(state_dir, verifier.name, artist_id) if state_dir else None  # type: ignore[arg-type]
    walk = AuditWalk(verifier, state=state, quorum=_quorum(quorum_file, verifier))
    pages: list[bytes] | None = [] if out is not None else None
    try:
        asyncio.run(_fetch(url, token, artist_id, walk, state, pages))  # type: ignore[arg-type]
        report = walk.report()
    finally:
        if pages:
            _save_pages(out, pages)  # type: ignore[arg-type]  # also after a failure: it is the evidence
    _finish(report, state_dir, as_json)


@audit.command("verify", epilog=EXITS_CHECKING)
@click.argument("file", type=click.File("rb"))
@click.option("--vkey", required=True, help="The log's verifier key you trust.")
@click.option("--state", "state_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Refuse a bundle older than what was verified here, and remember this one.")
@witness_quorum_option("the checkpoint must carry its quorum's cosignatures.")
@json_option("Print the report as JSON.")
def audit_verify(file: IO[bytes], vkey: str, state_dir: Path | None, quorum_file: Path | None, as_json: bool) -> None:
    """Verify a saved audit bundle FILE offline (one page, or the list of pages `tlog audit --out` saves)."""
    verifier = Verifier.from_key(vkey)
    try:
        data = loads_strict(file.read())
    except ValidationError as exc:
        raise ValidationError(f"{file.name} is not a saved audit bundle: {exc.message}") from None
    pages = data if isinstance(data, list) else [data]
    artist_id = pages[0].get("artist_id") if pages and isinstance(pages[0], dict) else None
    state = _load_state(state_dir, verifier.name, artist_id) if state_dir and isinstance(artist_id, str) else None
    walk = AuditWalk(verifier, state=state, quorum=_quorum(quorum_file, verifier))
    for page in pages:
        walk.add(page)
    _finish(walk.report(), state_dir, as_json)


async def _fetch(url: str, token: str, artist_id: str, walk: AuditWalk, state: AuditState | None,
                 pages: list[bytes] | None) -> None:
    """Fetches the walk's pages, each verified as it arrives (since the remembered size, with a state)."""
    path = f"v1/artists/{quote(artist_id, safe='')}/audit"
    async with TileClient(url, token=token, user_agent="tlog-audit") as client:
        params = {"since": state.size} if state is not None else {}
        try:
            raw = await _page(client, path, params)
        except ValidationError:
            if state is None:
                raise
            # The log refuses since=<the size you verified>: it is behind that. Fetch what it shows now,
            # so that the verifier can say that it went back.
            params = {}
            raw = await _page(client, path, params)
        _add(walk, raw, pages)
        while walk.next_aseq is not None:
            _add(walk, await _page(client, path, {**params, "size": walk.size, "from_aseq": walk.next_aseq}), pages)  # type: ignore[dict-item]


async def _page(client: TileClient, path: str, params: dict[str, int]) -> bytes:
    """One page of the audit bundle. A 404 there is the log not showing this artist's history (an
    unknown artist, or a token for another): the log could not be read, not bad input."""
    try:
        return await client.get(path, {k: str(v) for k, v in params.items()})
    except NotFound as exc:
        raise Unreachable(exc.message) from None


def _add(walk: AuditWalk, raw: bytes, pages: list[bytes] | None) -> None:
    """Verifies a page the log sent. An answer that is not a bundle is the log failing to show what it
    must, so a failed verification (exit 1), unlike a file that is not one (bad input, exit 2)."""
    if pages is not None:
        pages.append(raw)
    try:
        walk.add(loads_strict(raw))
    except ValidationError as exc:
        raise VerificationError(f"the log's answer is not a valid audit bundle: {exc.message}") from None


def _quorum(path: Path | None, verifier: Verifier) -> WitnessQuorum | None:
    """The witness quorum whose cosignatures the checkpoint must carry, if --witness-policy names one."""
    return load_witness_quorum(path, verifier) if path is not None else None


def _finish(report: AuditReport, state_dir: Path | None, as_json: bool) -> None:
    if state_dir is not None:
        new = report.state()
        if new is not None:
            _save_state(state_dir, new)
    click.echo(orjson.dumps(report.to_json()).decode() if as_json else report.readable())


# --- the state directory ---------------------------------------------------------------------------------


def _state_path(state_dir: Path, origin: str, artist_id: str) -> Path:
    """One file per log and artist (a label audits several artists from one directory); the name is a
    digest, since neither an origin nor an artist id need be a valid file name."""
    digest = hashlib.sha256(f"{origin}\n{artist_id}".encode()).hexdigest()[:32]
    return state_dir / f"audit-{digest}.json"


def _load_state(state_dir: Path, origin: str, artist_id: str) -> AuditState | None:
    path = _state_path(state_dir, origin, artist_id)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    state = AuditState.from_json(loads_strict(data))
    if (state.origin, state.artist_id) != (origin, artist_id):
        raise ValidationError(f"{path} is the state of {state.artist_id!r} on {state.origin}, not of this artist and log")
    return state


def _save_state(state_dir: Path, state: AuditState) -> None:
    private_dir(state_dir)
    write_private(_state_path(state_dir, state.origin, state.artist_id), orjson.dumps(state.to_json()) + b"\n")


def _save_pages(out: Path, pages: list[bytes]) -> None:
    body = pages[0] if len(pages) == 1 else b"[" + b",".join(pages) + b"]"
    write_private(out, body)
