"""TlogClient: one request per call to a tlog server (SPEC §6), every receipt verified before it is returned.

    async with TlogClient(url, token, vkey=VKEY) as log:
        result = await log.use(record)
        if result.refused:          # the artist opted out: do not proceed (the refusal is logged too)
            return
        ...

A receipt is trusted only after it checks out offline against the verifier key the caller names: the
checkpoint's signature, the inclusion proof up to that checkpoint, and that the proven leaf is the one the
server reported (same leaf hash, same decision). The server's word alone is never returned as verified.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence
from urllib.parse import quote

import aiohttp
import orjson

from .. import merkle
from ..checkpoint import Checkpoint, Receipt, verify_receipt
from ..errors import Conflict, Forbidden, NotFound, TlogError, Unauthorized, ValidationError, by_type
from ..leaf import Leaf, parse_leaf
from ..note import Verifier
from ..records import DECISIONS
from ..remote import check_base_url
from ..backoff import Backoff, parse_retry_after
from .errors import NotYetPublished, ProtocolError, RateLimited, ReceiptError, TooLarge, TransientError, describe, is_transient

MAX_RECORDS = 1000  # per POST /v1/uses (SPEC §6)

_STATUS_ERRORS: dict[int, type[TlogError]] = {
    400: ValidationError, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict, 413: TooLarge,
}
_ANSWERED = {t: s for s, t in _STATUS_ERRORS.items()}


def answered_status(exc: TlogError) -> int:
    """The status of the answer `response_error` made `exc` of (400, 409, 413 for a refused record, which
    the spool keeps), by its type; 400 for a type no 4xx answer makes."""
    return by_type(_ANSWERED, exc) or 400


@dataclass
class UseRefused(TlogError):
    """The log's decision is `refused`: the use must not go ahead. The refusal itself is logged (the
    artist can see their opt-out was honoured); `receipt` is that logged answer."""

    receipt: UseReceipt | None = None
    code: str = "refused"


@dataclass(frozen=True)
class UseReceipt:
    """The log's answer for one use. `receipt` and `checkpoint` are set when a receipt came with the
    answer, and then they have been verified; `leaf_hash` is otherwise the server's word, which
    `TlogClient.receipt(index, leaf_hash=...)` can check later."""

    event_id: str
    index: int
    decision: str
    leaf_hash: bytes
    duplicate: bool
    receipt: Receipt | None = None
    checkpoint: Checkpoint | None = None

    @property
    def refused(self) -> bool:
        """The use must not go ahead (SPEC §4)."""
        return self.decision == "refused"

    def raise_if_refused(self) -> UseReceipt:
        """Returns self, or raises UseRefused: for callers that would rather stop by exception."""
        if self.refused:
            raise UseRefused(
                f"the log refused use {self.event_id!r} (index {self.index}): the artist's preferences or the "
                "policy do not allow it, so it must not go ahead",
                receipt=self,
            )
        return self


@dataclass(frozen=True)
class VerifiedReceipt:
    """A receipt that checked out: `leaf` (decoded from the receipt's own bytes) is at `index` in the tree
    of `checkpoint`, which the trusted key signed."""

    index: int
    leaf: Leaf
    leaf_hash: bytes
    receipt: Receipt
    checkpoint: Checkpoint


@dataclass(frozen=True)
class PreferenceChange:
    """The `preference` leaf a PUT appended."""

    artist_id: str
    index: int
    leaf_hash: bytes
    by: str
    preferences: dict[str, Any]


@dataclass(frozen=True)
class LogInfo:
    origin: str
    verifier_keys: list[str]
    size: int
    policy: str | None
    purposes: list[str]


class TlogClient:
    """An async client of one log. Use it as an async context manager, or call `close()`.

    `vkey` is the log's verifier key (as `tlog init` prints it), obtained out of band: it is what makes a
    receipt mean anything. `origin`, if given, must be that key's name (a cheap check that the key is the
    intended log's). `session` may be shared; the client then leaves it open. `retries` is how many times
    an idempotent call is resent after a transient failure."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        vkey: str,
        origin: str | None = None,
        session: aiohttp.ClientSession | None = None,
        timeout: float = 30.0,
        retries: int = 2,
    ) -> None:
        self.url = check_base_url(url)
        self.verifier = Verifier.from_key(vkey)
        if origin is not None and origin != self.verifier.name:
            raise ValidationError(
                f"the verifier key is for the log {self.verifier.name!r}, not {origin!r}",
                [{"field": "vkey", "message": "key name does not match origin"}],
            )
        self.origin = self.verifier.name
        self.retries = retries
        self._auth = f"Bearer {token}"
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session = session
        self._owns_session = session is None
        self._key_checked = False

    async def __aenter__(self) -> TlogClient:
        """Opens the session and checks `vkey` against the log's own (`GET /v1/log`), so that a wrong key
        is a clear error now rather than every receipt failing later. A log that cannot be reached now is
        checked before the first call that reaches it: a service must be able to start during an outage."""
        self._http()
        try:
            await self._check_key()
        except TransientError:
            pass
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    # --- the API -----------------------------------------------------------------------------

    async def use(self, record: Mapping[str, Any]) -> UseReceipt:
        """Logs one use and returns the log's answer with its receipt, verified. Check `.refused`
        (or call `.raise_if_refused()`) before going ahead with the use. Sending the same record again
        is safe: the log answers with the first result and `duplicate=True`."""
        event_id = record.get("event_id")
        data = await self._call("POST", "/v1/uses", _encode(record), retries=self.retries)
        ((result, text),) = parse_results(data, [event_id])
        if text is None:
            # The server chose receipt_url over an inline receipt; fetch it, one more round trip.
            verified = await self.receipt(result.index, leaf_hash=result.leaf_hash)
        else:
            verified = self.verify_receipt(text.encode(), index=result.index, leaf_hash=result.leaf_hash)
        if verified.leaf.decision != result.decision:
            raise ReceiptError(
                f"the log said {result.decision!r} for {result.event_id!r} but the leaf it proved says "
                f"{verified.leaf.decision!r}: the answer cannot be trusted"
            )
        return replace(result, receipt=verified.receipt, checkpoint=verified.checkpoint)

    async def log_many(self, records: Sequence[Mapping[str, Any]]) -> list[UseReceipt]:
        """Logs up to 1000 uses in one request, all or nothing; answers in the records' order. The log
        sends receipt URLs rather than receipts for batches, so the results carry no receipt (fetch one
        with `receipt(index, leaf_hash=...)` when needed)."""
        if not 1 <= len(records) <= MAX_RECORDS:
            raise ValidationError(
                f"log_many takes 1 to {MAX_RECORDS} records, not {len(records)}",
                [{"field": "records", "message": f"1 to {MAX_RECORDS} records"}],
            )
        bodies = [_encode(r) for r in records]
        return await self.submit(bodies, [r.get("event_id") for r in records], retries=self.retries)

    async def receipt(self, index: int, *, leaf_hash: bytes | None = None) -> VerifiedReceipt:
        """GET /v1/receipts/{index}, verified; with `leaf_hash`, also that it proves that leaf."""
        data = await self._call("GET", f"/v1/receipts/{index}", retries=self.retries)
        return self.verify_receipt(data, index=index, leaf_hash=leaf_hash)

    async def get_preferences(self, artist_id: str) -> dict[str, Any]:
        data = _json(await self._call("GET", _artist_path(artist_id), retries=self.retries))
        prefs = data.get("preferences") if isinstance(data, dict) else None
        if not isinstance(prefs, dict):
            raise ProtocolError("the preferences answer has no 'preferences' object")
        return prefs

    async def set_preferences(self, artist_id: str, preferences: Mapping[str, Any]) -> PreferenceChange:
        """Replaces the artist's preferences (a service token may only restrict them). Not retried: each
        PUT appends a preference leaf, so a resend is a second change, not the same one."""
        data = _json(await self._call("PUT", _artist_path(artist_id), _encode(preferences), retries=0))
        try:
            return PreferenceChange(
                artist_id=data["artist_id"], index=_index(data["index"]), leaf_hash=_hash(data["leaf_hash"]),
                by=data["by"], preferences=data["preferences"],
            )
        except (TypeError, KeyError, ValueError) as exc:
            raise ProtocolError(f"the preferences answer is malformed: {exc}") from None

    async def log_info(self) -> LogInfo:
        """GET /v1/log: the log's origin, keys, size, policy id and purpose codes."""
        data = _json(await self._call("GET", "/v1/log", retries=self.retries))
        try:
            return LogInfo(
                origin=data["origin"], verifier_keys=list(data["verifier_keys"]), size=_index(data["size"]),
                policy=data["policy"], purposes=[p["code"] if isinstance(p, dict) else p for p in data["purposes"]],
            )
        except (TypeError, KeyError, ValueError) as exc:
            raise ProtocolError(f"the /v1/log answer is malformed: {exc}") from None

    # --- verification ------------------------------------------------------------------------

    def verify_receipt(self, data: bytes, *, index: int, leaf_hash: bytes | None = None) -> VerifiedReceipt:
        """Checks a c2sp.org/tlog-proof receipt offline against this client's verifier key; raises
        ReceiptError with the reason if it does not prove a well-formed leaf at `index`."""
        key = f"{self.verifier.name}+{self.verifier.key_hash:08x}"
        try:
            receipt = Receipt.parse(data)
            checkpoint = verify_receipt(receipt, None, [self.verifier])
            leaf = parse_leaf(receipt.extra or b"")
        except TlogError as exc:
            raise ReceiptError(f"the receipt for leaf {index} does not verify against the key {key}: {exc}") from exc
        if receipt.index != index:
            raise ReceiptError(f"asked for the receipt of leaf {index}, got one for leaf {receipt.index}")
        proven = merkle.leaf_hash(receipt.extra or b"")
        if leaf_hash is not None and proven != leaf_hash:
            raise ReceiptError(
                f"the receipt for leaf {index} proves a different leaf ({proven.hex()[:16]}…) than the log "
                f"reported ({leaf_hash.hex()[:16]}…): the answer cannot be trusted"
            )
        return VerifiedReceipt(index, leaf, proven, receipt, checkpoint)

    # --- transport ---------------------------------------------------------------------------

    async def submit(self, bodies: Sequence[bytes], event_ids: Sequence[str | None], *, retries: int = 0) -> list[UseReceipt]:
        """POST records already encoded as JSON objects (as the spool keeps them) as one batch. No records,
        no request: the log would refuse an empty batch, and a caller retrying that would flood it."""
        if not bodies:
            return []
        body = b'{"records":[' + b",".join(bodies) + b"]}"
        data = await self._call("POST", "/v1/uses", body, retries=retries)
        return [r for r, _ in parse_results(data, event_ids)]

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def _check_key(self) -> None:
        """ValidationError unless this client's verifier key is one the log publishes."""
        if self._key_checked:
            return
        data = _json(await self._send("GET", "/v1/log", None))
        keys = data.get("verifier_keys") if isinstance(data, dict) else None
        if not isinstance(keys, list):
            raise ProtocolError(f"{self.url}/v1/log does not list the log's verifier keys: is this a tlog server?")
        if self.verifier.key not in keys:
            raise ValidationError(
                f"the verifier key for {self.verifier.name} ({self.verifier.key_hash:08x}) is not a key of the log at "
                f"{self.url}, which publishes {', '.join(str(k) for k in keys) or 'none'}: use the key its operator "
                "published, or check the URL",
                [{"field": "vkey", "message": "not one of the log's verifier keys"}])
        self._key_checked = True

    async def _call(self, method: str, path: str, body: bytes | None = None, *, retries: int) -> bytes:
        backoff = Backoff()
        while True:
            try:
                await self._check_key()
                return await self._send(method, path, body)
            except TlogError as exc:
                if retries <= 0 or not is_transient(exc):
                    raise
                retries -= 1
                await asyncio.sleep(backoff.next_delay(getattr(exc, "retry_after", None)))

    async def _send(self, method: str, path: str, body: bytes | None) -> bytes:
        headers = {"Authorization": self._auth}
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            async with self._http().request(
                method, self.url + path, data=body, headers=headers, timeout=self._timeout
            ) as resp:
                data = await resp.read()
                if 200 <= resp.status < 300:
                    return data
                raise response_error(resp.status, data, resp.headers.get("Retry-After"))
        except asyncio.TimeoutError:
            raise TransientError(
                f"{method} {path}: {self.url} did not answer within {self._timeout.total} s", code="timeout"
            ) from None
        except aiohttp.ClientError as exc:
            raise TransientError(f"{method} {path}: cannot reach {self.url} ({exc})", code="connection_failed") from exc


# --- answers -----------------------------------------------------------------------------------


def parse_results(data: bytes, event_ids: Sequence[str | None]) -> list[tuple[UseReceipt, str | None]]:
    """The `results` of a POST /v1/uses answer, each with its inline receipt text (or None), checked to
    be one per record sent, in order."""
    obj = _json(data)
    results = obj.get("results") if isinstance(obj, dict) else None
    if not isinstance(results, list) or len(results) != len(event_ids):
        raise ProtocolError(f"the log answered {len(results) if isinstance(results, list) else 'no'} results for {len(event_ids)} records")
    out = []
    for want, item in zip(event_ids, results):
        try:
            result = UseReceipt(
                event_id=item["event_id"], index=_index(item["index"]), decision=item["decision"],
                leaf_hash=_hash(item["leaf_hash"]), duplicate=item["duplicate"],
            )
            text = item.get("receipt")
        except (TypeError, KeyError, ValueError, AttributeError) as exc:
            raise ProtocolError(f"a result in the log's answer is malformed: {exc!r}") from None
        if result.decision not in DECISIONS or type(result.duplicate) is not bool or not (text is None or isinstance(text, str)):
            raise ProtocolError(f"the result for {result.event_id!r} is malformed")
        if want is not None and result.event_id != want:
            raise ProtocolError(f"the log answered for {result.event_id!r} where {want!r} was expected")
        out.append((result, text))
    return out


def response_error(status: int, data: bytes, retry_after: str | None) -> TlogError:
    """The typed error for a non-2xx answer, keeping the server's code, message and field details."""
    code, message, details = _error_body(data, status)
    text = describe(message, details)
    kwargs: dict[str, Any] = {"details": details}
    if code:
        kwargs["code"] = code
    if status == 429:
        return RateLimited(f"the log is rate limiting this client: {text}", retry_after=parse_retry_after(retry_after), **kwargs)
    if status == 425:
        return NotYetPublished(f"not published yet: {text}", retry_after=parse_retry_after(retry_after), **kwargs)
    if status >= 500:
        return TransientError(f"the log is unavailable (HTTP {status}): {text}", retry_after=parse_retry_after(retry_after), **kwargs)
    if status == 401:
        return Unauthorized(f"the log did not accept the token: {text}", **kwargs)
    if status == 403:
        return Forbidden(f"the log refused this token: {text}", **kwargs)
    return _STATUS_ERRORS.get(status, TlogError)(text, **kwargs)


def _error_body(data: bytes, status: int) -> tuple[str | None, str, list[dict[str, Any]]]:
    try:
        err = orjson.loads(data)["error"]
        code, message, details = err.get("code"), err["message"], err.get("details") or []
        if isinstance(code, str) and isinstance(message, str) and isinstance(details, list):
            return code, message, [d for d in details if isinstance(d, dict)]
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        pass
    # Not the API's error shape (a proxy, a crash page): say what we got, briefly.
    return None, f"HTTP {status}: {data[:200].decode('utf-8', 'replace').strip() or 'no body'}", []


def _json(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"the log's answer is not JSON: {exc}") from None


def _encode(obj: Mapping[str, Any]) -> bytes:
    try:
        return orjson.dumps(dict(obj))
    except TypeError as exc:
        raise ValidationError(f"cannot encode the record as JSON: {exc}", [{"field": "", "message": str(exc)}]) from None


def _index(value: Any) -> int:
    if type(value) is not int or value < 0:
        raise ValueError(f"not an index: {value!r}")
    return value


def _hash(value: Any) -> bytes:
    raw = bytes.fromhex(value)
    if len(raw) != merkle.HASH_SIZE:
        raise ValueError(f"not a {merkle.HASH_SIZE}-byte hash: {value!r}")
    return raw


def _artist_path(artist_id: str) -> str:
    return f"/v1/artists/{quote(artist_id, safe='')}/preferences"
