"""Options that several commands share, defined once (SPEC §7)."""

from __future__ import annotations

import functools
from typing import IO, Any, Callable, TypeVar

import click

from .errors import ValidationError

F = TypeVar("F", bound=Callable[..., Any])


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
