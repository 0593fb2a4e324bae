"""What requests name: numbers in query parameters (`?size=`, `?limit=`…) and path segments
(`/v1/leaves/{index}`), and the platform ids of paths (`/v1/artists/{artist_id}/…`).

One rule for every route: a number is a non-negative decimal written the one way it can be, ASCII digits
with no sign, no spaces, no leading zeros ("0" itself excepted), at most 19 digits and at most 2^63 - 1,
the int64 of SQLite, sumdb/tlog and Tessera. Anything else is a 400 naming the parameter. A single
spelling per value means two URLs that differ are two questions (a cache, a log line or a signed link
never sees `007` and `7` as different), and the int64 bound means no value reaches the store that
SQLite cannot hold.

An index is always below a tree size, so it is at most 2^63 - 2 (MAX_INDEX): the store may then compute
index + 1 without overflowing.

An id in a path must be a platform id (SPEC §2.1), checked after the token (auth.py), so that an artist
asking about any other id, well-formed or not, gets 403, never a hint."""

from __future__ import annotations

from aiohttp import web

from ..errors import ValidationError
from ..records import PLATFORM_ID_RULE, is_platform_id

INT64_MAX = 2**63 - 1
MAX_INDEX = INT64_MAX - 1
MAX_DIGITS = len(str(INT64_MAX))  # 19
SHOWN = 40  # characters of a refused value quoted back


def parse_decimal(raw: str) -> int | None:
    """The value of `raw` under the rule above, or None if it breaks it."""
    if not (raw.isascii() and raw.isdigit()) or len(raw) > MAX_DIGITS or (len(raw) > 1 and raw[0] == "0"):
        return None
    value = int(raw)
    return value if value <= INT64_MAX else None


def decimal(raw: str, name: str, *, minimum: int = 0, maximum: int = INT64_MAX) -> int:
    """`raw`, the value of parameter `name`, as a number from `minimum` to `maximum` (400 otherwise)."""
    value = parse_decimal(raw)
    if value is None:
        raise ValidationError(f"{name} must be a decimal integer without sign or leading zeros, below 2^63",
                              [{"field": name, "message": f"not such an integer: {raw[:SHOWN]!r}"}])
    if value < minimum:
        raise ValidationError(f"{name} must be at least {minimum}", [{"field": name, "message": f"below {minimum}"}])
    if value > maximum:
        raise ValidationError(f"{name} must be at most {maximum}", [{"field": name, "message": f"above {maximum}"}])
    return value


def query_int(request: web.Request, name: str, *, minimum: int = 0, maximum: int = INT64_MAX,
              default: int | None = None) -> int:
    """Query parameter `name` as a number; `default` when it is absent (required if there is none)."""
    raw = request.query.get(name)
    if raw is None:
        if default is None:
            raise ValidationError(f"query parameter {name!r} is required", [{"field": name, "message": "required"}])
        return default
    return decimal(raw, name, minimum=minimum, maximum=maximum)


def path_index(request: web.Request, name: str = "index") -> int:
    """Path segment `{name}` as a leaf index (or another row number: a feed key's id), at most MAX_INDEX."""
    return decimal(request.match_info[name], name, maximum=MAX_INDEX)


def platform_id(value: str, name: str) -> str:
    """`value`, the path's `{name}`, which must be a platform id."""
    if not is_platform_id(value):
        raise ValidationError(f"{name} {PLATFORM_ID_RULE}", [{"field": name, "message": "not a platform id"}])
    return value


def check_artist_id(artist_id: str) -> str:
    """The {artist_id} of a path. Callers check the token first (see above)."""
    return platform_id(artist_id, "artist_id")
