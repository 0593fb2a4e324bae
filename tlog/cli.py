"""The `tlog` command. Thin: parse arguments, call the library, print. Errors are TlogError subclasses,
turned into one line on stderr and a non-zero exit here and nowhere else."""

from __future__ import annotations

import base64
import errno
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Callable, Iterator, NoReturn

import click
import orjson
from click.core import ParameterSource

from . import merkle
from .canonical import loads_strict
from .cli_options import (EXITS, EXITS_CHECKING, JSON_META, db_option, json_option, keys_option, quiet_option,
                          token_options, witness_quorum_option)
from .errors import (DETAILS_SHOWN, EXIT_BAD_INPUT, EXIT_UNREACHABLE, Alert, Forbidden, TlogError, Unreachable, ValidationError,
                     VerificationError)
from .intake import read_jsonl
from .log import LocalLog, init_log, open_log, shown
from .policy import Policy, parse_policy
from .policy import policy_diff as diff_policies
from .records import parse_rfc3339_ms
from .store import open_store

if TYPE_CHECKING:
    from .webhooks import Target


class _BadArgument(click.ClickException):
    exit_code = EXIT_BAD_INPUT


class TlogGroup(click.Group):
    """The one place where errors become exit codes (SPEC §7) and one plain line, never a traceback: a
    TlogError by its class's `exit_code`, click's usage errors 2, a declined prompt 2, the OS errors
    users cause 2 (3 for a busy port). With --json the failure is also printed as a JSON object on stdout."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            result = super().invoke(ctx)
            sys.stdout.flush()  # output still buffered meets a closed pipe here, not after exit
            return result
        except BrokenPipeError:
            _closed_pipe()
        except TlogError as exc:
            _fail(ctx, exc.message, exc.details, exc.exit_code, label=exc.label, index=getattr(exc, "index", None))
        except click.Abort:
            _fail(ctx, "declined: nothing was changed", [], EXIT_BAD_INPUT)
        except click.ClickException as exc:
            if exc.exit_code == EXIT_BAD_INPUT:
                raise
            raise _BadArgument(exc.format_message()) from None  # a file click could not open (its code: 1)
        except OSError as exc:
            code = EXIT_UNREACHABLE if exc.errno in _UNREACHABLE_ERRNOS else EXIT_BAD_INPUT
            _fail(ctx, f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": "), [], code)
        except KeyboardInterrupt:
            _fail(ctx, "interrupted", [], EXIT_INTERRUPTED)


def _closed_pipe() -> NoReturn:
    """SPEC §7: the reader went away (`tlog export | head`): stop writing, quietly, exit 0. stdout now
    points to /dev/null, or Python would complain once more when it flushes stdout at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    sys.exit(0)


# A port already taken, or a server that cannot be reached: the log, not the input, is the problem.
_UNREACHABLE_ERRNOS = frozenset({errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.ECONNREFUSED, errno.EHOSTUNREACH,
                                 errno.ENETUNREACH, errno.ETIMEDOUT})
EXIT_INTERRUPTED = 130  # as shells report Ctrl-C


def _fail(ctx: click.Context, message: str, details: list[dict[str, Any]], code: int, *, label: str = "error",
          index: int | None = None) -> None:
    if ctx.meta.get(JSON_META):
        click.echo(orjson.dumps({"ok": False, "error": message, "exit": code, "index": index,
                                 "details": details}).decode())
    click.echo(f"{label}: {message}", err=True)
    details = [d for d in details if d.get("message") != message or d.get("field") or d.get("line")]
    for d in details[:20]:
        where = d.get("field") or d.get("line") or ""
        click.echo(f"  {where}: {d.get('message', '')}" if where else f"  {d.get('message', '')}", err=True)
    if len(details) > 20:
        click.echo(f"  … and {len(details) - 20} more", err=True)
    sys.exit(code)


@click.group(cls=TlogGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="tlog")
def main() -> None:
    """tlog: a verifiable log of every AI use of artists' content.

    \b
    Start a log and look at it:
      tlog init --origin example.com/ai-log
      tlog append --service recsys uses.jsonl
      tlog checkpoint
      tlog verify
      tlog serve

    \b
    Exit status of every command (SPEC §7):
      0  all held
      1  a verification failed (verify, audit) or a monitor alert
      2  bad input, a refused operation or a declined prompt (usage errors too)
      3  the log could not be reached or read (down, 401/403, a busy port)
    """


# --- creating and writing --------------------------------------------------------------------


@main.command()
@db_option
@click.option("--origin", default="tlog.example/log", show_default=True,
              help="The log's name: first line of every checkpoint and the signing key's name (no spaces, no '+').")
@click.option("--id-pattern", default=None, metavar="REGEX",
              help="A regular expression every content and artist id must match in full, on top of the default "
                   "(1–256 printable ASCII characters without spaces), e.g. 'sc:(track|user):[0-9]+'. Fixed for the "
                   "life of the log.")
@keys_option("Where a postgresql:// log's key files go (made mode 0700; default $TLOG_KEYS).")
def init(db: Path | str, origin: str, id_pattern: str | None, keys: Path | None) -> None:
    """Create a new log: database (mode 0600), signer and VRF keys beside it (mode 0600), and the first
    batch: the log leaf (origin and VRF public key), the default policy and the artist map's first map
    leaf, under the first signed checkpoint (size 3). Prints the verifier key alone on the last line.
    With a postgresql:// URL the database must exist and be empty; the keys go in --keys DIR.

    Refuses to overwrite an existing log or key.

    \b
    Examples:
      tlog init --origin example.com/ai-log
      tlog init --db postgresql://tlog@db.internal/tlog --keys /etc/tlog/keys --origin example.com/ai-log"""
    with init_log(db, origin, id_pattern=id_pattern, keys=keys) as log:
        cp, _ = log.latest_checkpoint()
        click.echo(f"created {log.shown} (origin {origin}, size {cp.size})", err=True)
        click.echo(f"secrets: {', '.join(str(p) for p in log.key_files)} (keep them off the database host's backups)", err=True)
        click.echo(log.verifier.key)


@main.command()
@db_option
def upgrade(db: Path | str) -> None:
    """Bring the tables of a log made by an earlier version up to this one, and say what changed. Any
    command that writes to the log does it as well; read-only ones, such as `tlog verify`, ask for it.
    Safe to run again, and while a server runs.

    \b
    Example:
      tlog upgrade --db data/tlog.db
    """
    store = open_store(db)
    done = store.migrated
    store.close()
    click.echo(f"upgraded {shown(db)}: {', '.join(done)}" if done else f"{shown(db)} is up to date")


@main.command()
@db_option
@click.option("--service", default=None, help="The service the records are logged as (as a service token would).")
@click.option("--url", default=None, help="Log to the server at URL instead (as the service its --token names).")
@token_options("With --url: a service token")
@click.option("--vkey", default=None, help="With --url: the log's verifier key you trust; every answer is checked against it.")
@quiet_option
@click.argument("file", type=click.File("rb"))
@click.pass_context
def append(ctx: click.Context, db: Path, service: str | None, url: str | None, token: str | None, vkey: str | None,
           quiet: bool, file: IO[bytes]) -> None:
    """Append AI-use records from FILE (JSON Lines, one record of SPEC §2.1 a line; - for stdin), to the
    local log as --service, or with --url to a remote server as the service of --token.

    Every record is validated first: if any is invalid, nothing is written and every problem is listed
    by line. Records already logged under the same event_id are reported as duplicates, not appended
    again. Returns once a signed checkpoint covering the records is stored; remotely, once the log's
    receipt for the last record verified against the log's key.

    \b
    Example line:
      {"event_id":"recs-1","content_id":"sc:track:123","artist_id":"sc:user:42",
       "purpose":"recommendation","phase":"inference",
       "system":{"id":"recs-ranker","model":"ranker","version":"2026.07.3"},
       "occurred_at":"2026-08-01T12:00:00Z"}
    \b
    Remotely:
      TLOG_TOKEN=… tlog append --url https://log.example --vkey 'log.example+1a2b3c4d+AU…' uses.jsonl
    """
    if url is not None:
        if ctx.get_parameter_source("db") is not ParameterSource.DEFAULT or service is not None:
            raise ValidationError("--url logs as the service of --token: leave out --db and --service")
        if not token or not vkey:
            raise ValidationError("--url needs a service token (--token, $TLOG_TOKEN or --token-file) and --vkey, "
                                  "the log's verifier key")
        from .client.upload import upload

        lines = read_jsonl(file)
        lines.refuse_if_problems()  # the server checks each record; the file's own problems are ours to say
        with _progress(quiet, "appending") as progress:
            try:
                done = upload(url, token, vkey, lines.rows, progress=progress)
            except Forbidden as exc:  # SPEC §7: a log that will not take this token is one we cannot reach (3)
                raise Unreachable(exc.message, exc.details) from None
    else:
        if service is None:
            raise ValidationError("name the service the records are logged as with --service (or log to a server with --url)")
        with open_log(db, secrets_needed=True) as log, _progress(quiet, "appending") as progress:
            done = log.append_jsonl(service, file, progress)
    click.echo(done.summary())


@main.group()
def policy() -> None:
    """Publish and list AI policies (each publication is a `policy` leaf)."""


@policy.command("publish")
@db_option
@click.option("--id", "policy_id", required=True, help="The policy's id, e.g. 2026-09 ([A-Za-z0-9._:-]{1,64}).")
@click.option("--effective", default=None, metavar="TIME",
              help="When it takes effect, RFC 3339 (e.g. 2027-01-05T00:00:00Z); default: at once, which a loosening "
                   "may not.")
@click.argument("file", type=click.File("rb"))
def policy_publish(db: Path, policy_id: str, effective: str | None, file: IO[bytes]) -> None:
    """Publish the policy document FILE under --id: uses logged from --effective on are decided by it.

    FILE is JSON: {"purposes": {"<code>": {"covers": …, "category": …, "default": "allowed|flagged|refused",
    "override_eligible": bool}}, "text": "…", "notice_days": n}; `tlog policy show` prints the one in force as
    an example. A policy that loosens the one it replaces (a default toward allowed, a new override, a
    shorter notice…) takes effect no sooner than the notice the policy in effect promised, counted from
    publication; with less, it is refused, naming the earliest --effective."""
    effective_ms = None
    if effective is not None:
        effective_ms = parse_rfc3339_ms(effective, field="--effective")
    with open_log(db, secrets_needed=True) as log:
        index, _ = log.sequencer().publish_policy(file.read(), policy_id, effective_ms=effective_ms)
        click.echo(f"policy {policy_id} published at index {index}")


@main.command()
@db_option
@click.option("--artist", "artist_id", required=True, help="The artist whose private data is erased.")
@click.option("--reason", required=True, help="Why, in a few words (kept, and shown with the erased entries; "
                                              "must not name the artist), e.g. \"account deleted\".")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def erase(db: Path, artist_id: str, reason: str, yes: bool) -> None:
    """Erase an artist's private data on request, keeping every proof (SPEC §2.2).

    Deletes every private field of the artist's entries (ids, content and event ids, free text, nonces,
    preferences), its id and its tokens, and appends an erasure leaf naming its tag and how many entries
    were erased. Public leaves, checkpoints, statistics and proofs stay and still verify. Prints what it
    will remove and asks first unless --yes; running it again changes nothing. Works while `tlog serve`
    runs on the same database. Backups still hold the data: see docs/PRIVACY.md.

    \b
    Example:
      tlog erase --artist sc:user:42 --reason "account deleted"
    """
    from . import erasure

    try:
        erasure.check_reason(reason, artist_id)
    except ValidationError as exc:
        raise click.BadParameter(exc.message, param_hint="--reason") from None
    with open_log(db, secrets_needed=True) as log:
        plan = erasure.plan(log.store, artist_id)
        click.echo(plan.describe())
        if not plan.empty and not yes and not _confirm("Erase it?"):
            click.echo("declined: nothing was erased", err=True)
            sys.exit(2)
        done, tokens = erasure.erase(log, artist_id, reason)
        if done is not None:
            click.echo(f"erased {len(done.entries)} entries of artist {artist_id}: erasure leaf at index {done.index}")
        elif tokens:
            click.echo(f"deleted {tokens} token{'s' * (tokens != 1)} of artist {artist_id}")


def _confirm(question: str) -> bool:
    """A yes/no question on the terminal; no answer (end of input) is a no."""
    try:
        return click.confirm(question, default=False)
    except click.Abort:
        click.echo("", err=True)
        return False


@policy.command("show")
@db_option
@click.option("--id", "policy_id", default=None, help="A published policy id (default: the one in force).")
def policy_show(db: Path, policy_id: str | None) -> None:
    """Print a published policy document."""
    with open_log(db) as log:
        pols = log.store.policies()
        rec = log.store.policy(policy_id) if policy_id else (pols[-1] if pols else None)
        if rec is None:
            raise ValidationError(f"no policy {policy_id!r}" if policy_id else "no policy published")
        click.echo(rec.document.decode())


@policy.command("diff")
@db_option
@json_option("JSON, as GET /v1/policies/{a}/diff/{b} answers.")
@click.argument("old")
@click.argument("new")
def policy_diff(db: Path, as_json: bool, old: str, new: str) -> None:
    """Show what changed from published policy OLD to NEW, purpose by purpose, each change that loosens
    the policy (SPEC §4: it then needs the notice OLD promised) marked.

    \b
    Example:
      tlog policy diff default 2027-01"""
    with open_log(db, readonly=True) as log:
        a, b = (_published_policy(log, policy_id) for policy_id in (old, new))
    if as_json:
        from .web.words import diff_json

        click.echo(orjson.dumps(diff_json(a, b)))
        return
    changes = diff_policies(a, b)
    loosens = any(c.loosens for c in changes)
    click.echo(f"{old} → {new}: " + ("no change" if not changes else f"{len(changes)} change{'s' * (len(changes) != 1)}"
                                     + (", loosens (needs the notice promised)" if loosens else ", none loosens")))
    for c in changes:
        click.echo(f"  {'LOOSENS ' if c.loosens else '        '}{c.summary()}")


def _published_policy(log: LocalLog, policy_id: str) -> Policy:
    rec = log.store.policy(policy_id)
    if rec is None:
        raise ValidationError(f"no published policy {policy_id!r} (tlog policy show --id ID prints one)")
    return parse_policy(rec.document, policy_id)


@main.command()
@db_option
@click.option("--artist", "artist_id", required=True, help="The artist whose preferences change.")
@click.option("--by", type=click.Choice(["artist", "service"]), default="artist", show_default=True,
              help="Who makes the change; a service may only add restrictions.")
@click.option("--service", default=None, help="With --by service: which service.")
@click.argument("file", type=click.File("rb"))
def preferences(db: Path, artist_id: str, by: str, service: str | None, file: IO[bytes]) -> None:
    """Replace an artist's AI preferences with the JSON document FILE (SPEC §4) and log a `preference` leaf.

    \b
    Example: {"no_ai": true, "purposes": {"fraud_detection": "allow"}}"""
    with open_log(db, secrets_needed=True) as log:
        change = log.sequencer().set_preferences(artist_id, loads_strict(file.read()), by=by, service=service)
        click.echo(f"preferences of {artist_id} set at index {change.index}")
        for d in change.dropped:
            click.echo(f"  dropped: {d['setting']} (was {_setting(d['was'])}, now {_setting(d['now'])})", err=True)


@main.group()
def content() -> None:
    """Bind content to its artists (SPEC §2.1), as the catalogue does with PUT /v1/content/{id}/artists.

    A use of a content must name one of the artists it is bound to (otherwise it is refused and nothing
    is logged); a content no one bound is bound to the artist its first use names. Co-owners are bound
    here. Each artist bound or released gets a `binding` leaf in its chain."""


@content.command("bind")
@db_option
@click.argument("content_id")
@click.option("--artist", "artists", multiple=True, required=True, help="An artist to bind the content to (repeatable).")
def content_bind(db: Path, content_id: str, artists: tuple[str, ...]) -> None:
    """Bind CONTENT_ID to one or more artists, besides those it is bound to already.

    \b
    Example (a track with two rightsholders):
      tlog content bind sc:track:123 --artist sc:user:42 --artist sc:user:77"""
    _rebind(db, content_id, lambda seq: seq.bind_content(content_id, artists))


@content.command("release")
@db_option
@click.argument("content_id")
@click.option("--artist", "artist", required=True, help="The artist to release the content from.")
def content_release(db: Path, content_id: str, artist: str) -> None:
    """Release CONTENT_ID from one of its artists. A content keeps at least one artist: bind its new
    artist first.

    \b
    Example:
      tlog content release sc:track:123 --artist sc:user:77"""
    _rebind(db, content_id, lambda seq: seq.release_content(content_id, artist))


def _rebind(db: Path, content_id: str, change: Callable[[Any], list[Any]]) -> None:
    with open_log(db, secrets_needed=True) as log:
        changes = change(log.sequencer())
        for c in changes:
            click.echo(f"{c.change} {content_id} {'to' if c.change == 'bind' else 'from'} {c.artist_id} at index {c.index}")
        if not changes:
            click.echo("no change", err=True)
        bound = ", ".join(a for a, _ in log.store.content_artists(content_id))
        click.echo(f"{content_id} is bound to {bound}")


def _setting(value: Any) -> str:
    return "unset" if value is None else orjson.dumps(value).decode()


# --- reading -----------------------------------------------------------------------------------


@main.command()
@db_option
def checkpoint(db: Path) -> None:
    """Print the latest signed checkpoint, its exact bytes and nothing else."""
    with open_log(db, readonly=True) as log:
        _, signed = log.latest_checkpoint()
        sys.stdout.buffer.write(signed)


@main.group()
def prove() -> None:
    """Print Merkle proofs from the stored tree (one base64 hash a line, or --json)."""


def _emit_proof(proof: list[bytes], as_json: bool, **fields: int) -> None:
    hashes = [base64.b64encode(h).decode() for h in proof]
    if as_json:
        click.echo(orjson.dumps({**fields, "proof": hashes}).decode())
    else:
        for h in hashes:
            click.echo(h)


@prove.command("inclusion")
@db_option
@click.argument("index", type=click.IntRange(min=0))
@click.option("--size", type=click.IntRange(min=1), default=None, help="Tree size (default: the latest checkpoint's).")
@click.option("--json", "as_json", is_flag=True, help="Print {index, size, proof} as JSON.")
def prove_inclusion(db: Path, index: int, size: int | None, as_json: bool) -> None:
    """Inclusion proof of leaf INDEX in the tree of --size leaves."""
    with open_log(db, readonly=True) as log:
        size = size or log.latest_checkpoint()[0].size
        _check_size(log, size)
        if index >= size:
            raise ValidationError(f"index {index} is not below size {size}")
        _emit_proof(merkle.inclusion_proof(index, size, log.store), as_json, index=index, size=size)


@prove.command("consistency")
@db_option
@click.argument("old", type=click.IntRange(min=1))
@click.argument("new", type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="Print {old, new, proof} as JSON.")
def prove_consistency(db: Path, old: int, new: int, as_json: bool) -> None:
    """Consistency proof from the tree of OLD leaves to the tree of NEW leaves."""
    with open_log(db, readonly=True) as log:
        _check_size(log, new)
        if old > new:
            raise ValidationError(f"old size {old} is larger than new size {new}")
        _emit_proof(merkle.consistency_proof(old, new, log.store), as_json, old=old, new=new)


def _check_size(log: LocalLog, size: int) -> None:
    have = log.store.size()
    if size > have:
        raise ValidationError(f"size {size} is larger than the log ({have} leaves)")


@main.command(epilog=EXITS_CHECKING)
@db_option
@click.option("--url", default=None, help="Verify the log served at URL from its public tiles instead (needs --vkey).")
@click.option("--vkey", default=None, help="The verifier key you trust; checked against the database's, required with --url.")
@click.option("--trusted", type=click.File("rb"), default=None,
              help="An older signed checkpoint you trust: the log must be consistent with it.")
@quiet_option
@json_option("Print the result as JSON ({\"ok\": true, \"size\", \"leaves\", …}; a failure: {\"ok\": false, \"error\", \"index\"}).")
@click.pass_context
def verify(ctx: click.Context, db: Path, url: str | None, vkey: str | None, trusted: IO[bytes] | None, quiet: bool,
           as_json: bool) -> None:
    """Check everything: every leaf hash and details commitment, the hash chain, every artist chain, the
    tree and every stored checkpoint, consistency with --trusted. Exit 0 only if all holds; otherwise
    one line naming the first bad index. Works as the fsck of a local database.

    Locally it also replays which artists each content is bound to (SPEC §2.1) against the bindings table,
    and lists every use of content bound to several artists that was not logged for each of them (exit 1).

    With --url it checks a remote log from its public checkpoint and tiles alone, trusting nothing but
    --vkey: the signature, every leaf and tile hash, the hash chain, every artist chain, the tree, and
    that the log still holds the tree of the --trusted checkpoint (keep one from each run for the next).

    \b
    Examples:
      tlog verify --db data/tlog.db
      curl -s https://log.example/checkpoint > seen.checkpoint
      tlog verify --url https://log.example/ --vkey 'log.example+1a2b3c4d+AU…' --trusted seen.checkpoint
    """
    from . import verify as verifier

    trusted_note = trusted.read() if trusted else None
    if url is not None:
        if ctx.get_parameter_source("db") is not ParameterSource.DEFAULT:
            raise ValidationError("--db and --url are alternatives: verify a local database or a remote log")
        if vkey is None:
            raise ValidationError("--url needs --vkey: the verifier key you trust for that log")
        with _progress(quiet) as progress:
            report = verifier.verify_remote(url, vkey, trusted=trusted_note, progress=progress)
    else:
        with _progress(quiet) as progress:
            with open_log(db, readonly=True) as log:
                report = verifier.verify_log(log, vkey=vkey, trusted=trusted_note, progress=progress)
    click.echo(orjson.dumps(report.to_json()).decode() if as_json else report.summary())
    if report.unshared:
        # SPEC §2.1: a use of co-owned content is logged once per rightsholder. The log holds (the summary
        # says so), the services that logged those uses did not: a failed check, exit 1.
        raise VerificationError(f"{len(report.unshared)} use(s) of content bound to several artists were not logged "
                                "for each of them", [{"message": u.message()} for u in report.unshared])


class _progress:
    """A click progress bar fed by a callback (done, total), or nothing when quiet or not a terminal."""

    def __init__(self, quiet: bool, label: str = "verifying") -> None:
        self.quiet = quiet or not sys.stderr.isatty()
        self.label = label
        self.bar: Any = None
        self.done = 0

    def __enter__(self) -> Callable[[int, int], None]:
        return self.update

    def update(self, done: int, total: int) -> None:
        if self.quiet:
            return
        if self.bar is None:
            self.bar = click.progressbar(length=total, label=self.label, file=sys.stderr, show_pos=True)
            self.bar.__enter__()
        self.bar.update(done - self.done)
        self.done = done

    def staged(self, label: str, done: int, total: int) -> None:
        """For work in stages (tlog migrate: one table after another): a new bar whenever `label` changes."""
        if label != self.label:
            self.__exit__()
            self.bar, self.done, self.label = None, 0, label
        self.update(done, total)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)


@main.command()
@db_option
@click.option("--url", default=None, help="The figures the server at URL publishes (GET /v1/stats) instead.")
@click.option("--since", default=None, metavar="DATE|TIME", help="Only leaves logged from then on: 2026-12-01 or 2026-12-01T12:00:00Z.")
@click.option("--until", default=None, metavar="DATE|TIME", help="Only leaves logged before then.")
@click.option("--purpose", default=None, help="Only uses of this purpose.")
@click.option("--phase", default=None, help="Only uses in this phase.")
@json_option("The JSON of GET /v1/stats instead of a table.")
@click.pass_context
def stats(ctx: click.Context, db: Path, url: str | None, since: str | None, until: str | None, purpose: str | None,
          phase: str | None, as_json: bool) -> None:
    """Leaves and uses (invocations) by type, purpose, phase and decision, over a period of logged_at (the
    only public time): what anyone can recount from the public leaves, and `tlog verify --url` does.

    \b
    Examples:
      tlog stats --since 2026-11-30 --until 2026-12-07
      tlog stats --url https://log.example --purpose model_training_generative --json
    """
    from .stats import answer, parse_query, purposes_of

    params = {k: v for k, v in (("since", since), ("until", until), ("purpose", purpose), ("phase", phase)) if v is not None}
    if url is not None:
        if ctx.get_parameter_source("db") is not ParameterSource.DEFAULT:
            raise ValidationError("--db and --url are alternatives: the figures of a local database or of a server")
        from .remote import fetch_json

        figures = fetch_json(url, "v1/stats", params)
    else:
        with open_log(db, readonly=True) as log:
            query = parse_query(params, purposes_of(log.store.policies()))
            size = log.latest_checkpoint()[0].size
            figures = answer(log.store.stats(size, query.since_ms, query.until_ms), size, query)
    if as_json:
        click.echo(orjson.dumps(figures).decode())
        return
    click.echo(f"{'type':<11}{'purpose':<32}{'phase':<22}{'decision':<18}{'leaves':>10}{'uses':>12}")
    for t in figures["totals"]:
        click.echo(f"{t['type']:<11}{t['purpose'] or '-':<32}{t['phase'] or '-':<22}{t['decision'] or '-':<18}"
                   f"{t['leaves']:>10}{t['uses']:>12}")


@main.command()
@db_option
@click.option("--url", default=None, help="Export the public leaves the server at URL serves (GET /v1/export) instead.")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl", show_default=True,
              help="JSON Lines, or CSV (columns: see README; loads in a spreadsheet or DuckDB).")
@click.option("--start", type=click.IntRange(min=0), default=0, show_default=True, help="First leaf index.")
@click.option("--end", type=click.IntRange(min=1), default=None, help="Leaf index to stop before (default: the checkpoint's size).")
@click.option("--public", is_flag=True, help="Locally: only the public leaves, no private details (always so with --url).")
@click.option("--out", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path), default=None,
              help="Output file, created mode 0600 and replaced only once complete (default stdout).")
@quiet_option
@click.pass_context
def export(ctx: click.Context, db: Path, url: str | None, fmt: str, start: int, end: int | None, public: bool,
           out: Path | None, quiet: bool) -> None:
    """Export leaves [--start, --end) as JSON Lines ({index, leaf_hash, leaf} and, locally without
    --public, the private details) or CSV (public leaves only, one column per leaf field). The secrets
    (signer and tag keys) are never exported.

    \b
    Examples:
      tlog export --db data/tlog.db --out log.jsonl
      tlog export --url https://log.example --format csv --out log.csv
      duckdb -c "SELECT purpose, phase, decision, sum(invocations) FROM 'log.csv' GROUP BY ALL"
    """
    from . import export as exporter

    if url is not None:
        if ctx.get_parameter_source("db") is not ParameterSource.DEFAULT:
            raise ValidationError("--db and --url are alternatives: export a local database or a server's public leaves")
        with _progress(quiet, "exporting") as progress, _output(out) as f:
            exporter.download(url, fmt, start, end, f, progress)
        return
    if fmt == "csv" and not public:
        raise ValidationError("CSV holds public leaves only: add --public (or export JSON Lines with the details)")
    with open_log(db, readonly=True) as log:
        size = log.latest_checkpoint()[0].size
        with _output(out) as f:
            for chunk in exporter.rows(log.store, start, min(end or size, size), fmt, details=not public):
                f.write(chunk)


@contextmanager
def _output(out: Path | None) -> Iterator[IO[bytes]]:
    """stdout, or a private file (files.replacing: mode 0600, atomic) for `--out FILE`."""
    if out is None or str(out) == "-":
        yield sys.stdout.buffer
        return
    from .files import replacing

    with replacing(out) as f:
        yield f


@main.command()
@db_option
@click.option("--to", "to", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The copy: a new file (never overwritten), created mode 0600.")
@quiet_option
def backup(db: Path, to: Path, quiet: bool) -> None:
    """Copy the SQLite log to a new file --to, consistently even while `tlog serve` writes to it, then
    verify the copy as `tlog verify --db` does; a copy that does not verify is removed (exit 1).

    The key files beside the database are NOT copied: back them up separately, offline, and never with
    the database (see docs/OPERATIONS.md, Backups).

    \b
    Example:
      tlog backup --db data/tlog.db --to /backups/tlog-2026-12-06.db"""
    from .backup import backup as make_backup

    with _progress(quiet, "copying") as copying, _progress(quiet, "verifying") as verifying:
        report = make_backup(db, to, progress=copying, verify_progress=verifying)
    click.echo(f"backed up {db} to {to}: {report.summary()}")


@main.command()
@click.option("--from", "source", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The SQLite log to copy.")
@click.option("--to", "target", required=True, metavar="URL", help="An empty PostgreSQL database: postgresql://…")
@keys_option("Copy the key files into this folder (made mode 0700; default $TLOG_KEYS); without it the command "
             "says where they go.")
@quiet_option
def migrate(source: Path, target: str, keys: Path | None, quiet: bool) -> None:
    """Copy a SQLite log into an empty PostgreSQL database, then check the copy leaf for leaf and root for
    root (every leaf hash equal; every stored checkpoint's root recomputed from the copy's tree) before
    returning: exit 1 naming the first index that differs. Stop `tlog serve` on the source first: what it
    writes after the copy's snapshot is not copied.

    \b
    Example:
      tlog migrate --from data/tlog.db --to postgresql://tlog@db.internal/tlog --keys /etc/tlog/keys"""
    from .migrate import migrate_log

    bars = _progress(quiet, "")  # one bar a table
    with bars:
        report = migrate_log(source, target, keys=keys, progress=bars.staged)
    click.echo(f"migrated {source} to {report.target}: {report.size:,} leaves, {report.checkpoints:,} checkpoints, "
               f"{sum(report.rows.values()):,} rows, checked leaf for leaf and root for root in {report.seconds:.1f}s")
    if report.keys:
        click.echo(f"key files: {', '.join(str(p) for p in report.keys)}")
    else:
        click.echo(f"key files not copied: put {', '.join(str(p) for p in report.key_sources)} (and any rotated "
                   "signer key beside them) in the key folder of each front end that sequences, named tlog.signer.key "
                   "and tlog.vrf.key (tlog serve --keys DIR), or run again with --keys DIR", err=True)


@main.command()
@db_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
@click.option("--max-body", default=8 << 20, show_default=True, type=click.IntRange(1024), help="Largest request body, bytes (413 beyond).")
@click.option("--max-records", default=1000, show_default=True, type=click.IntRange(1, 100_000), help="Most records in one POST /v1/uses.")
@click.option("--page-size", default=100, show_default=True, type=click.IntRange(1, 100_000), help="Default page size of listings.")
@click.option("--max-page-size", default=1000, show_default=True, type=click.IntRange(1, 100_000), help="Largest page size a client may ask for.")
@click.option("--max-export", default=10_000, show_default=True, type=click.IntRange(1, 1_000_000), help="Most leaves in one GET /v1/export.")
@click.option("--rate", default=1000.0, show_default=True, type=click.FloatRange(0), help="Requests/s per address without a token (0: no limit).")
@click.option("--burst", default=2000.0, show_default=True, type=click.FloatRange(1), help="Burst allowed above --rate.")
@click.option("--auth-fail-rate", default=5.0, show_default=True, type=click.FloatRange(0), help="Failed authentications/s per address before 429 (0: no limit).")
@click.option("--auth-fail-burst", default=20.0, show_default=True, type=click.FloatRange(1), help="Burst allowed above --auth-fail-rate.")
@click.option("--token-rate", default=0.0, show_default=True, type=click.FloatRange(0), help="Requests/s per valid token (0: no limit, the default).")
@click.option("--token-burst", default=100.0, show_default=True, type=click.FloatRange(1), help="Burst allowed above --token-rate.")
@click.option("--trusted-proxy-header", default=None, metavar="NAME",
              help="Behind a load balancer: count rate limits by the client address the balancer puts last in this "
                   "header (e.g. X-Forwarded-For). Only where clients cannot reach the server directly: they could "
                   "write any address there. Unset (the default), the connection's address counts.")
@click.option("--max-error-details", default=DETAILS_SHOWN, show_default=True, type=click.IntRange(1, 1000),
              help="Problems an error answer lists; one more entry counts the rest.")
@click.option("--max-preferences", default=64 << 10, show_default=True, type=click.IntRange(1024, 8 << 20),
              help="Largest preferences document, bytes (413 beyond).")
@click.option("--max-content-overrides", default=1000, show_default=True, type=click.IntRange(0, 1_000_000),
              help="Most per-content settings in one artist's preferences.")
@click.option("--metrics-token", is_flag=True, help="/metrics only with an auditor or metrics token (tlog token create --metrics).")
@click.option("--metrics-bind", default=None, metavar="HOST:PORT", callback=lambda _c, _p, v: v and _host_port(v),
              help="Serve /metrics only on this address, not on --host/--port.")
@witness_quorum_option("log/witness/group/quorum lines, witnesses with their URLs: /checkpoint then advances "
                       "only once its quorum of witnesses has cosigned.")
@click.option("--notify-url", default=None, metavar="URL",
              help="Post signed JSON events (policies announced and taking effect, preferences changed, refusals "
                   "and overrides) to the platform's notification system at URL; see docs/OPERATIONS.md.")
@click.option("--notify-secret-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="The key that signs those events (HMAC-SHA256): at least 32 bytes, in a file other users "
                   "cannot read. Read once at start.")
@keys_option("The key folder of a postgresql:// log (default $TLOG_KEYS); without it the server does not sequence.")
def serve(db: Path | str, keys: Path | None, host: str, port: int, max_body: int, max_records: int, page_size: int, max_page_size: int,
          max_export: int, rate: float, burst: float, auth_fail_rate: float, auth_fail_burst: float, token_rate: float,
          token_burst: float, trusted_proxy_header: str | None, max_error_details: int, max_preferences: int, max_content_overrides: int,
          metrics_token: bool, metrics_bind: tuple[str, int] | None, quorum_file: Path | None,
          notify_url: str | None, notify_secret_file: Path | None) -> None:
    """Run the HTTP server (SPEC §6) on the log.

    Reads are public; writes need the key files beside the database (without them the server is
    read-only). Refuses to start if the stored checkpoint does not verify with the log's key and origin,
    or if another server already runs on the same database. Rate limits apply to requests without a token
    and to failed authentications; a valid token is limited only with --token-rate.

    On a postgresql:// log, start as many servers as wanted, on any hosts: each takes writes and serves
    reads, and one at a time, elected through PostgreSQL, sequences. Those with the key folder (--keys)
    run for it; those without hand their writes to whichever does (README, "Many machines").

    \b
    Examples:
      tlog serve --db data/tlog.db --host 0.0.0.0 --port 8080
      tlog serve --token-rate 200 --metrics-bind 127.0.0.1:9100
      tlog serve --db postgresql://tlog@db.internal/tlog --keys /etc/tlog/keys --trusted-proxy-header X-Forwarded-For"""
    from .server.app import run
    from .server.ratelimit import RateLimit
    from .server.metrics import MetricsAccess
    from .server.state import Limits
    from .witness.quorum import load_witness_quorum

    limits = Limits(max_body=max_body, max_records=max_records, page_size=page_size, max_page_size=max_page_size,
                    max_export=max_export, max_details=max_error_details, max_preferences=max_preferences,
                    max_content_overrides=max_content_overrides)
    rates = RateLimit(rate, burst, auth_fail_rate, auth_fail_burst, token_rate, token_burst, trusted_proxy_header)
    access = MetricsAccess(metrics_token, metrics_bind)
    quorum = load_witness_quorum(quorum_file) if quorum_file else None
    notify = _notify_target(notify_url, notify_secret_file)
    # A busy port is an Unavailable: exit 3, as an unreachable log is (SPEC §7; TlogGroup).
    run(db, host=host, port=port, limits=limits, rate_limit=rates, witness_quorum=quorum, metrics_access=access,
        notify=notify, keys=keys)


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"must be HOST:PORT, e.g. 127.0.0.1:9100, not {text!r}")
    return host.strip("[]"), int(port)


def _notify_target(url: str | None, secret_file: Path | None) -> Target | None:
    """--notify-url and --notify-secret-file go together; a bad URL or an unsafe secret is a usage error
    (exit 2), refused before the server starts."""
    from .webhooks import load_target

    if url is None and secret_file is None:
        return None
    if url is None or secret_file is None:
        raise click.UsageError("--notify-url and --notify-secret-file go together: events are always signed")
    try:
        return load_target(url, secret_file)
    except ValidationError as exc:
        raise click.UsageError(exc.message) from None


@main.group()
def token() -> None:
    """Create, list and revoke bearer tokens (shown once, stored only as SHA-256)."""


@token.command("create")
@db_option
@click.option("--service", "service", default=None, help="A service token logging uses as NAME.")
@click.option("--issuer", is_flag=True, help="With --service: it may mint short-lived artist tokens (POST /v1/tokens) "
                                             "for the platform's sign-in.")
@click.option("--artist", "artists", multiple=True, metavar="ID",
              help="An artist token for this artist id; repeat it for a label or manager covering several.")
@click.option("--auditor", is_flag=True, help="An auditor token (reads every entry's details).")
@click.option("--metrics", is_flag=True, help="A token that may read /metrics and nothing private (for `tlog serve --metrics-token`).")
@click.option("--catalog", is_flag=True, help="With --service: the catalog right, to bind content to its artists "
                                              "(PUT /v1/content/{id}/artists).")
@click.option("--expires", default=None, metavar="DURATION",
              help="The token stops working after DURATION, e.g. 30d, 12h, 90m, 2w (default: never; revoke it then).")
def token_create(db: Path, service: str | None, issuer: bool, artists: tuple[str, ...], auditor: bool, metrics: bool,
                 catalog: bool, expires: str | None) -> None:
    """Create a token; it is printed once, alone on the last line, and never again.

    \b
    Examples:
      tlog token create --service recsys
      tlog token create --service catalogue --catalog
      tlog token create --service signin --issuer
      tlog token create --artist sc:user:42 --expires 30d
      tlog token create --artist sc:user:42 --artist sc:user:43
      tlog token create --auditor
      tlog token create --metrics"""
    from .tokens import artist_subject, check_rights, check_subject, new_token, parse_duration

    chosen = [(r, v) for r, v in (("service", service), ("artist", artists or None), ("auditor", auditor or None),
                                  ("metrics", metrics or None)) if v is not None]
    if len(chosen) != 1:
        raise ValidationError("name exactly one of --service NAME, --artist ID (repeatable), --auditor, --metrics")
    role = chosen[0][0]
    subject = service if role == "service" else artist_subject(artists) if role == "artist" else None
    check_subject(role, subject)
    rights = check_rights(role, [r for r, wanted in (("catalog", catalog), ("issuer", issuer)) if wanted])
    now_ms = int(time.time() * 1000)
    expires_ms = None if expires is None else now_ms + parse_duration(expires) * 1000
    secret, digest = new_token()
    with open_log(db) as log:
        token_id = log.store.add_token(role, subject, digest, now_ms, rights=rights, expires_ms=expires_ms)
    what = f"{role}{' ' + subject if subject else ''}{''.join(f' +{r}' for r in sorted(rights))}"
    until = f", expires {_iso(expires_ms)}" if expires_ms is not None else ""
    click.echo(f"token {token_id}: {what}{until} (shown once; store it now)", err=True)
    click.echo(secret)


@token.command("list")
@db_option
@json_option("Print the tokens as a JSON list.")
def token_list(db: Path, as_json: bool) -> None:
    """List tokens (ids, roles, subjects, rights, dates; never the secrets)."""
    with open_log(db, readonly=True) as log:
        rows = log.store.tokens()
    if as_json:
        click.echo(orjson.dumps([_token_json(t) for t in rows]).decode())
        return
    click.echo(f"{'id':>4}  {'role':<8} {'subject':<32} {'rights':<8} {'created':<24} {'expires':<24} revoked")
    for t in rows:
        revoked = _iso(t.revoked_ms) if t.revoked_ms else "-"
        expires = _iso(t.expires_ms) if t.expires_ms else "-"
        click.echo(f"{t.token_id:>4}  {t.role:<8} {t.subject or '-':<32} {' '.join(sorted(t.rights)) or '-':<8} "
                   f"{_iso(t.created_ms):<24} {expires:<24} {revoked}")


def _token_json(t: Any) -> dict[str, Any]:
    from .tokens import artist_ids_of

    return {"id": t.token_id, "role": t.role, "service": t.subject if t.role == "service" else None,
            "artist_ids": list(artist_ids_of(t.role, t.subject)),
            "rights": sorted(t.rights), "created_at": _iso(t.created_ms),
            "expires_at": _iso(t.expires_ms) if t.expires_ms else None,
            "revoked_at": _iso(t.revoked_ms) if t.revoked_ms else None}


def _iso(ms: int) -> str:
    from .records import format_logged_at

    return format_logged_at(ms)


@token.command("revoke")
@db_option
@click.argument("token_id", type=click.IntRange(min=1))
def token_revoke(db: Path, token_id: int) -> None:
    """Revoke token TOKEN_ID (see `tlog token list`); it stops working at once, also on a running server."""
    with open_log(db) as log:
        if not log.store.revoke_token(token_id, int(time.time() * 1000)):
            raise ValidationError(f"no active token {token_id}")
    click.echo(f"token {token_id} revoked")


@main.command(epilog="Exit status: 0 all holds; 1 an ALERT: fork, rollback, bad signature, missing quorum, broken "
                     "chain, logged_at going back, tiles or stats that lie; 2 bad input; 3 the log could not be "
                     "reached or read, or another monitor holds --state.")
@click.option("--url", required=True, help="The log's base URL (where /checkpoint and /tile/ are served).")
@click.option("--vkey", required=True, help="The log's verifier key you trust.")
@click.option("--state", "state_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory keeping what was checked so far (created if missing); one per log.")
@witness_quorum_option("every checkpoint must carry its quorum's cosignatures.")
@click.option("--follow", is_flag=True, help="Keep watching, a round every --interval seconds, until interrupted.")
@click.option("--interval", default=10.0, show_default=True, type=click.FloatRange(min=0.1), help="Seconds between rounds.")
@quiet_option
@json_option("Print one JSON object a round ({\"ok\": true, \"origin\", \"size\", \"root\", \"grew\"}); the "
             "running commentary goes to stderr.")
def monitor(url: str, vkey: str, state_dir: Path, quorum_file: Path | None, follow: bool, interval: float,
            quiet: bool, as_json: bool) -> None:
    """Follow a log from its public API and alert on anything a log must never do.

    Each round checks the new checkpoint's signature and its consistency with the last one checked
    (the log's consistency proof), then every new leaf: leaf and tile hashes, the hash chain, logged_at
    order, every artist chain, every map root, the policy each use names (it must be the one in effect
    at its logged_at), each new policy's notice (a loosening announced with less notice than promised),
    the tree against the signed root, and the leaf counts by type, purpose and decision against
    /v1/stats. An alert names the first bad index and the rule it breaks. What passed is kept in --state, so the next run checks only what is
    new, and a fork between runs (two logs under one key) or a rollback is caught.

    With --witness-policy, each checkpoint must also carry the cosignatures of the policy's quorum
    of witnesses, so that a view shown to this monitor alone is refused.

    The conflicting signed checkpoint of a fork or rollback is saved in --state as evidence.

    \b
    Examples:
      tlog monitor --url https://log.example/ --vkey 'log.example+1a2b3c4d+AU…' --state ~/.tlog/log.example
      tlog monitor --url https://log.example/ --vkey … --state ~/.tlog/log.example --follow --interval 60
      tlog monitor --url https://log.example/ --vkey … --state … --witness-policy witnesses.policy
    """
    from .monitor import run_monitor

    def round_json(cp: Any, grew: bool) -> None:
        click.echo(orjson.dumps({"ok": True, "origin": cp.origin, "size": cp.size,
                                 "root": base64.b64encode(cp.root).decode(), "grew": grew}).decode())

    try:
        with _progress(quiet or follow) as progress:
            run_monitor(url, vkey, state_dir, follow=follow, interval=interval, quorum_file=quorum_file,
                        echo=(lambda m: click.echo(m, err=True)) if as_json else click.echo, progress=progress,
                        on_round=round_json if as_json else None)
    except VerificationError as alert:
        raise Alert(alert.message, index=alert.index) from None
    except KeyboardInterrupt:
        click.echo("stopped", err=True)


# Command groups defined in their own modules (they import nothing from here, so no cycle).
from .audit_cli import audit  # noqa: E402
from .keys_cli import key  # noqa: E402
from .witness.cli import witness  # noqa: E402

main.add_command(audit)
main.add_command(key)
main.add_command(witness)


def _document_exits(group: click.Group) -> None:
    """Every command's help ends with its exit status (SPEC §7), including commands added later."""
    for cmd in group.commands.values():
        cmd.epilog = cmd.epilog or EXITS
        if isinstance(cmd, click.Group):
            _document_exits(cmd)


_document_exits(main)

if __name__ == "__main__":
    main()
