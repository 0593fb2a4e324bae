"""What the client checks about a use before the log sees it: everything the log checks except whether
the purpose is in its current policy. The policy is the log's to say, and it may change while a record
waits in the spool, so only the purpose code's syntax is checked here."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Collection, Mapping, Sequence, cast

from ..errors import ValidationError
from ..records import PURPOSE_CODE, validate_use
from .errors import describe


class _PurposeSyntax:
    """Stands for "every purpose code" where validate_use asks for the policy's codes."""

    def __contains__(self, code: object) -> bool:
        return isinstance(code, str) and PURPOSE_CODE.fullmatch(code) is not None


ANY_PURPOSE = cast(Collection[str], _PurposeSyntax())


def check_uses(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The records, normalised as the log normalises them; ValidationError naming every bad field
    (`purpose` for one record, `records[3].purpose` for several)."""
    now = datetime.now(timezone.utc)
    valid, problems = [], []
    for i, r in enumerate(records):
        try:
            valid.append(validate_use(r, now=now, purposes=ANY_PURPOSE, at=f"records[{i}]" if len(records) > 1 else ""))
        except ValidationError as exc:
            problems.extend(exc.details)
    if problems:
        raise ValidationError(describe("record rejected; nothing was spooled", problems), problems)
    return cast(list[dict[str, Any]], valid)
