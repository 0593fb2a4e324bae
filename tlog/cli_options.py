"""Options that several commands share, defined once (SPEC §7): the token options, `--json`, and the exit
status every command's help ends with. The command modules (cli, audit_cli, keys_cli, witness.cli) import
nothing from one another, so what they share lives here."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import IO, Any, Callable, TypeVar

import click

from .errors import ValidationError

F = TypeVar("F", bound=Callable[..., Any])

# Set in the context's meta (shared by a command and its parents) when --json was given, so that the group
# reports a failure as JSON too (cli.TlogGroup).
JSON_META = "tlog.json"

EXITS = ("Exit status: 0 done; 2 bad input, a refused operation or a declined prompt; 3 the log could not be "
         "reached or read (down, 401/403, a busy port, not a tlog database).")
EXITS_CHECKING = ("Exit status: 0 everything held; 1 a check failed (the first failure is named); 2 bad input; "
                  "3 the log could not be reached or read (down, 401/403, not a tlog database).")


class DbParam(click.ParamType):
    """`--db`: a SQLite file (a Path), or a PostgreSQL database by `postgresql://` URL (kept as given)."""

    name = "path|url"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Path | str:
        from .store import is_postgres_url

        if isinstance(value, Path) or not is_postgres_url(str(value)):
            return click.Path(dir_okay=False, path_type=Path).convert(value, param, ctx)  # type: ignore[no-any-return]
        return str(value)


def keys_option(help: str) -> Callable[[F], F]:
    """`--keys DIR`: the key folder of a postgresql:// log. $TLOG_KEYS, read by log.py for such a log only (a
    SQLite log's keys are beside it), stands in for it in every command."""
    return click.option("--keys", type=click.Path(file_okay=False, path_type=Path), default=None, help=help)


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
