"""Webhook events (issue 14): what the platform's notification system is told, derived from the log.

Every event follows from what the log already holds, durably and in order: a `policy` leaf (announced),
a `preference` leaf (changed, by the artist or by a service), a `refusal` leaf or a use decided
`allowed_override`, and, from the policy schedule, the moment a policy's `effective_at` passes. So an
event is a function of the log: derived again after a restart it has the same id and the same bytes,
which is what lets the notifier (webhooks.py) deliver at least once and the receiver drop duplicates.

The order of the stream: log events by index; the `policy.effective` event of a policy after its
announcement and before the first log event logged at or after its `effective_at` (`due_effective`).

Signatures follow Standard Webhooks (standardwebhooks.com): `webhook-id`, `webhook-timestamp` (Unix
seconds) and `webhook-signature: v1,<base64 HMAC-SHA256(key, id "." timestamp "." body)>`, over the exact
body bytes, so a receiver can refuse a forged, altered or replayed event. Pure: no I/O, no clock.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any, Collection, Final, Sequence

from .canonical import canonical
from .policy import Policy, in_effect, policy_loosenings
from .records import format_logged_at, parse_logged_at
from .store.base import Entry

ANNOUNCED: Final = "policy.announced"
EFFECTIVE: Final = "policy.effective"
PREFERENCES: Final = "preferences.changed"
REFUSED: Final = "use.refused"
OVERRIDDEN: Final = "use.overridden"

# The entries that make an event: what the notifier asks the store for (see `entry_event`).
EVENT_TYPES: Final = ("policy", "preference", "refusal")
EVENT_DECISIONS: Final = ("allowed_override",)

Schedule = Sequence[tuple[int, int, Policy]]  # (effective_at ms, policy leaf index, policy), as policy.in_effect
_PRIVATE: Final = frozenset(("nonce", "index", "logged_at", "artist_id", "content_id"))  # not in a use event's "use"


@dataclass(frozen=True, slots=True)
class Event:
    """One event: `body` is the RFC 8785 JSON that is signed and sent, byte for byte. `index` is the log
    index it follows from (for `policy.effective`, the policy leaf's); `at_ms` when it happened (the
    leaf's `logged_at`, or the policy's `effective_at`)."""

    id: str
    type: str
    index: int
    at_ms: int
    body: bytes


def _event(origin: str, type_: str, index: int, at_ms: int, fields: dict[str, Any]) -> Event:
    # The origin is in the id: a successor log starts again at index 0, and its events must not be
    # dropped as duplicates of its predecessor's.
    event_id = f"{origin}/{index}/{type_}"
    body = canonical({"id": event_id, "type": type_, "log": origin, "index": index, "at": format_logged_at(at_ms),
                      **fields})
    return Event(event_id, type_, index, at_ms, body)


def entry_event(origin: str, entry: Entry, schedule: Schedule) -> Event | None:
    """The event a stored entry makes, or None. `schedule` holds at least every policy leaf up to it."""
    d = entry.details
    if entry.type == "policy":
        return _announced(origin, entry, schedule)
    if entry.erased is not None:  # erased on the artist's request (SPEC §2.2): nothing left to tell
        return None
    if entry.type == "preference":
        fields = {"artist_id": d["artist_id"], "by": d["by"], "service": d["service"], "preferences": d["preferences"]}
        return _event(origin, PREFERENCES, entry.index, entry.logged_ms, fields)
    if entry.type == "refusal" or (entry.type == "use" and d["decision"] == "allowed_override"):
        use = {k: v for k, v in d.items() if k not in _PRIVATE}
        fields = {"artist_id": d["artist_id"], "content_id": d["content_id"], "use": use}
        return _event(origin, REFUSED if entry.type == "refusal" else OVERRIDDEN, entry.index, entry.logged_ms, fields)
    return None


def _announced(origin: str, entry: Entry, schedule: Schedule) -> Event:
    effective = parse_logged_at(entry.details["effective_at"])
    policy = _at(schedule, entry.index)
    replaced = in_effect([s for s in schedule if s[1] < entry.index], effective)
    return _event(origin, ANNOUNCED, entry.index, entry.logged_ms, {
        "policy": policy.id, "effective_at": entry.details["effective_at"], "notice_days": policy.notice_days,
        **_change(replaced, policy),
    })


def _change(old: Policy | None, new: Policy) -> dict[str, Any]:
    """What `new` replaces and how it loosens it (SPEC §4, one line per change; empty: it does not)."""
    return {"replaces": None if old is None else old.id, "loosenings": [] if old is None else policy_loosenings(old, new)}


def _at(schedule: Schedule, index: int) -> Policy:
    for _, i, policy in schedule:
        if i == index:
            return policy
    raise ValueError(f"the schedule has no policy leaf at index {index}")


def due_effective(schedule: Schedule, announced_before: int, done: Collection[int], now_ms: int) -> list[tuple[int, int]]:
    """(effective_at ms, policy leaf index) of each `policy.effective` event due at `now_ms`, in order:
    its announcement (index < `announced_before`) delivered, not in `done`, its time come, and the
    policy really in effect then (a policy that a later leaf with the same `effective_at` replaces
    never is, SPEC §4 ties)."""
    due = []
    for effective, index, _ in schedule:
        if index < announced_before and index not in done and effective <= now_ms:
            winner = max((e, i) for e, i, _ in schedule if e <= effective)
            if winner == (effective, index):
                due.append((effective, index))
    return sorted(due)


def effective_event(origin: str, schedule: Schedule, effective_ms: int, index: int) -> Event:
    """The `policy.effective` event of the policy leaf at `index`, in effect from `effective_ms`."""
    policy = _at(schedule, index)
    before = in_effect(schedule, effective_ms - 1)
    return _event(origin, EFFECTIVE, index, effective_ms, {
        "policy": policy.id, "effective_at": format_logged_at(effective_ms), **_change(before, policy),
    })


def signature(key: bytes, event_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value: "v1," and the base64 HMAC-SHA256 over id.timestamp.body."""
    mac = hmac.new(key, f"{event_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def headers(key: bytes, event: Event, timestamp: int) -> dict[str, str]:
    """The headers of one delivery attempt (a retry is signed again with its own timestamp)."""
    return {
        "Content-Type": "application/json",
        "webhook-id": event.id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(key, event.id, timestamp, event.body),
    }
