"""Options that several commands share, defined once (SPEC §7): `--db`, `--keys`, the token options,
`--json`, `--quiet`, `--witness-policy`, and the exit status every command's help ends with. The command modules (cli, audit_cli, keys_cli, witness.cli) import
nothing from one another, so what they share lives here."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import IO, Any, Callable, TypeVar

import click

from .errors import ValidationError
from .log import default_db

F = TypeVar("F", bound=Callable[..., Any])

# Set in the context's meta (shared by a command and its parents) when --json was given, so that the group
# reports a failure as JSON too (cli.TlogGroup).
JSON_META = "tlog.json"

EXITS = ("Exit status: 0 done; 2 bad input, a refused operation or a declined prompt; 3 the log could not be "
         "reached or read (down, 401/403, a busy port, not a tlog database).")
EXITS_CHECKING = ("Exit status: 0 everything held; 1 a check failed (the first failure is named); 2 bad input; "
                  "3 the log could not be reached or read (down, 401/403, not a tlog database).")


class DbParam(click.ParamType[Path | str, Any]):  # click 8.5: generic in (value, input)
    """`--db`: a SQLite file (a Path), or a PostgreSQL database by `postgresql://` URL (kept as given)."""

    name = "path|url"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Path | str:
        from .store import is_postgres_url

        if isinstance(value, Path) or not is_postgres_url(str(value)):
            return click.Path(dir_okay=False, path_type=Path).convert(value, param, ctx)
        return str(value)


def keys_option(help: str) -> Callable[[F], F]:
    """`--keys DIR`: the key folder of a postgresql:// log. $TLOG_KEYS, read by log.py for such a log only (a
    SQLite log's keys are beside it), stands in for it in every command."""
    return click.option("--keys", type=click.Path(file_okay=False, path_type=Path), default=None, help=help)


db_option = click.option(
    "--db", "db", type=DbParam(), default=default_db, show_default="./data/tlog.db or $TLOG_DB",
    help="The log's SQLite database, or a postgresql:// URL (its key files are then in --keys DIR or $TLOG_KEYS).",
)

quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress bar.")


def witness_quorum_option(help: str) -> Callable[[F], F]:
    """`--witness-policy FILE` (the flag keeps C2SP's name; the parameter is `quorum_file`): a
    c2sp.org/tlog-policy file, which this code calls a witness quorum file (witness/quorum.py), since
    "policy" here means the AI policy."""
    return click.option("--witness-policy", "quorum_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                        default=None, help=f"A c2sp.org/tlog-policy file: {help}")


def json_option(help: str) -> Callable[[F], F]:
    """`--json`: print the result as JSON on stdout; a failure is then a JSON object as well."""

    def remember(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
        if value:
            ctx.meta[JSON_META] = True
        return value

    return click.option("--json", "as_json", is_flag=True, callback=remember, help=help)


def token_options(who: str) -> Callable[[F], F]:
    """`--token T`, `$TLOG_TOKEN` or `--token-file FILE`, handed to the command as one `token` argument
    (None when none is given). A token on a command line is visible to other users of the machine (ps);
    the file or the variable is not. `who` says whose token it is, for --help."""

    def decorate(f: F) -> F:
        @functools.wraps(f)
        def command(*args: Any, token: str | None, token_file: IO[str] | None, **kwargs: Any) -> Any:
            if token_file is not None:
                token = token_file.read().strip()
                if not token:
                    raise ValidationError(f"{token_file.name} is empty: --token-file names a file holding the token")
            return f(*args, token=token, **kwargs)

        command = click.option("--token-file", type=click.File("r"), default=None,
                               help="Read the token from this file (better than --token, which others may see in ps).")(command)
        command = click.option("--token", default=None, envvar="TLOG_TOKEN", metavar="TOKEN",
                               help=f"{who} (or $TLOG_TOKEN, or --token-file).")(command)
        return command  # type: ignore[return-value]

    return decorate
