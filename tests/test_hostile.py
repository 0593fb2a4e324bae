"""Hostile input, property-based (hypothesis): records, query parameters and paths, tile paths, signed
checkpoints carrying unknown signature lines, receipts and audit bundles.

Two properties throughout. Parsers and validators answer with a value or with the project's own error
type (naming the field where there is one), never another exception; the HTTP app answers every request
with a documented 4xx or a 2xx, never a 5xx, and a refused write changes nothing. Verifiers reject every
single-bit mutation of a valid checkpoint, receipt or bundle, except inside a signature line of a key
they do not know, which signed notes ignore by design (and which these tests therefore add, random, as
Sunlight's witnesses do in production). Merkle proofs (test_merkle.py) and plain notes (test_note.py)
are flipped bit by bit there already."""

from __future__ import annotations

import asyncio
import base64
import string
import time
from datetime import datetime, timezone
from functools import cache
from typing import Any, Callable, Iterator

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from yarl import URL

from tlog import merkle
from tlog.audit import verify_bundle
from tlog.canonical import join_path, loads_strict
from tlog.checkpoint import Checkpoint, Receipt, open_checkpoint, verify_receipt
from tlog.demo import build_demo, sample_records
from tlog.errors import NoteError, ProofError, TlogError, ValidationError, VerificationError
from tlog.log import open_log
from tlog.note import ALG_COSIGNATURE_V1, Signature, Signer, Verifier, generate_key, is_valid_name, sign_note
from tlog.policy import DEFAULT_POLICY
from tlog.records import validate_use
from tlog.server.app import make_app
from tlog.server.ratelimit import RateLimit
from tlog.tiles import TILE_WIDTH, Tile, decode_bundle, parse_tile_path, tile_path
from tlog.tokens import new_token

NOW = datetime.now(timezone.utc)
PURPOSES = frozenset(DEFAULT_POLICY.purposes)
ARTIST = "sc:user:hostile"
WRITER = "sc:user:hostile-writes"


def fast(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])

# --- strategies -------------------------------------------------------------------------------------

# Every Unicode category, lone surrogates included (they reach us escaped in JSON), plus the characters
# that matter to our syntax.
TEXT = st.one_of(
    st.text(max_size=40),
    st.text(st.characters(codec=None, categories=None), max_size=12),
    st.sampled_from(["", " ", "\x00", "\ud800", "a\u2028b", "é", "1e3", "-0", "0x10", "null", "true", "../..", "%2F",
                     "2026-08-01T12:00:00Z", "9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59", "x" * 257]),
)
JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), TEXT,
    st.integers(), st.integers(-(2**53) + 1, 2**53 - 1), st.sampled_from([0, -1, 2**53, 2**63, -(2**63) - 1]),
    st.floats(allow_nan=True, allow_infinity=True),
)
JSON = st.recursive(JSON_SCALARS, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(TEXT, kids, max_size=4),
                    max_leaves=12)


@cache
def valid_records() -> list[dict[str, Any]]:
    return [r for _, r in sample_records(30, seed=7)]


def details_fields(exc: ValidationError) -> list[str]:
    assert exc.details, f"{exc.message!r} names no field"
    for d in exc.details:
        assert isinstance(d.get("field"), str) and isinstance(d.get("message"), str) and d["message"], d
    return [d["field"] for d in exc.details]


def validates(obj: Any, at: str = "") -> dict[str, Any] | ValidationError:
    try:
        return validate_use(obj, now=NOW, purposes=PURPOSES, at=at)  # type: ignore[return-value]
    except ValidationError as exc:
        details_fields(exc)
        return exc


# --- records ---------------------------------------------------------------------------------------


@fast(300)
@given(JSON)
def test_any_json_value_is_a_record_or_a_named_error(value: Any) -> None:
    got = validates(value, at="records[0]")
    if isinstance(got, ValidationError):
        assert all(f.startswith("records[0]") for f in details_fields(got)), got.details


TOP_FIELDS = ("event_id", "content_id", "artist_id", "purpose", "phase", "system", "occurred_at", "invocations",
              "window_end", "detail", "basis")


@st.composite
def mutated_record(draw: st.DrawFn) -> tuple[dict[str, Any], set[str]]:
    """A valid record with 1–3 fields mutated (set to anything, deleted, or a string edited), and the
    top-level names of what was touched."""
    rec = orjson.loads(orjson.dumps(draw(st.sampled_from(valid_records()))))
    touched = set()
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["set", "delete", "edit", "unknown", "system"]))
        name = draw(st.sampled_from(TOP_FIELDS))
        if kind == "set":
            rec[name] = draw(JSON)
        elif kind == "delete":
            rec.pop(name, None)
        elif kind == "edit" and isinstance(rec.get(name), str):
            s = rec[name]
            i = draw(st.integers(0, len(s)))
            rec[name] = s[:i] + draw(TEXT) + s[i + draw(st.integers(0, 3)):]
        elif kind == "unknown":
            name = draw(TEXT.filter(lambda k: k not in TOP_FIELDS))
            rec[name] = draw(JSON)
        else:
            name = "system"
            sub = draw(st.sampled_from(["id", "model", "version", "extra"]))
            if isinstance(rec.get("system"), dict):
                rec["system"][sub] = draw(JSON)
        touched.add(name)
    return rec, touched


@fast(400)
@given(mutated_record())
def test_mutated_records_name_the_mutated_field(case: tuple[dict[str, Any], set[str]]) -> None:
    rec, touched = case
    got = validates(rec)
    if isinstance(got, ValidationError):
        # every problem is named at a field that was touched (window_end is also checked against occurred_at)
        names = [join_path("", n) for n in touched | ({"window_end"} if "occurred_at" in touched else set())]
        for f in details_fields(got):
            assert any(f == n or f.startswith((n + ".", n + "[")) for n in names), (f, touched, got.details)
    else:
        assert validates(dict(got)) == got  # a normalised record is a fixed point


@st.composite
def mutated_bytes(draw: st.DrawFn, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, max(len(out) - 1, 0)))
        op = draw(st.sampled_from(["flip", "insert", "delete", "replace"]))
        if op == "flip" and out:
            out[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            out[i:i] = draw(st.sampled_from([b'"', b"\\", b"\\ud800", b"\\u0000", b",", b"{", b"]", b"1e5", b".0",
                                             b'"event_id":"x",', b"\xff", b"\xed\xa0\x80", b" ", b"\x00"]))
        elif op == "delete" and out:
            del out[i : i + draw(st.integers(1, 8))]
        elif out:
            out[i] = draw(st.integers(0, 255))
    return bytes(out)


@fast(300)
@given(st.data())
def test_mutated_json_bytes_load_or_fail_cleanly(data: st.DataObject) -> None:
    raw = data.draw(mutated_bytes(orjson.dumps({"records": valid_records()[:2]})))
    try:
        value = loads_strict(raw)
    except ValidationError as exc:
        details_fields(exc)
        return
    if isinstance(value, dict) and isinstance(value.get("records"), list):
        for i, r in enumerate(value["records"]):
            validates(r, at=f"records[{i}]")


# --- the app, in process ------------------------------------------------------------------------------


class App:
    """The aiohttp app on a demo log, served in process on its own event loop (hypothesis drives it
    from synchronous tests), with a token for each role made directly in the store."""

    def __init__(self, tmp) -> None:
        db = tmp / "tlog.db"
        build_demo(str(db), 40)
        self.reader = open_log(db)
        self.writer = open_log(db, secrets_needed=True)
        self.verifier = self.reader.verifier
        self.tokens: dict[str, str] = {}
        for role, subject in (("service", "recsys"), ("artist", ARTIST), ("auditor", None)):
            token, digest = new_token()
            self.reader.store.add_token(role, subject, digest, int(time.time() * 1000))
            self.tokens[role] = token
        self.loop = asyncio.new_event_loop()
        self.client = TestClient(TestServer(make_app(self.reader, self.writer, rate_limit=RateLimit(0, 1, 0, 1))),
                                 loop=self.loop)
        self.loop.run_until_complete(self.client.start_server())

    def request(self, method: str, url: str | URL, role: str | None = None, **kw: Any) -> tuple[int, str, bytes]:
        async def go() -> tuple[int, str, bytes]:
            headers = {**kw.pop("headers", {}), **({"Authorization": f"Bearer {self.tokens[role]}"} if role else {})}
            async with self.client.request(method, url, headers=headers, **kw) as r:
                return r.status, r.content_type, await r.read()

        return self.loop.run_until_complete(go())

    def checked(self, method: str, url: str | URL, role: str | None = None, **kw: Any) -> tuple[int, bytes]:
        """A request that must not fail on our side: 2xx, or a 4xx with the JSON error shape."""
        status, ctype, body = self.request(method, url, role, **kw)
        assert status < 500, (method, str(url), role, status, body[:300])
        if status >= 400 and method != "HEAD":
            assert ctype == "application/json", (str(url), status, ctype)
            err = orjson.loads(body)["error"]
            assert set(err) == {"code", "message", "details"} and err["message"], body
        return status, body

    def state(self) -> tuple[bytes, int]:
        return self.request("GET", "/checkpoint")[2], orjson.loads(self.request("GET", "/v1/log")[2])["size"]

    def close(self) -> None:
        self.loop.run_until_complete(self.client.close())
        self.loop.close()
        self.reader.close()
        self.writer.close()


@pytest.fixture(scope="module")
def app(tmp_path_factory) -> Iterator[App]:
    a = App(tmp_path_factory.mktemp("hostile"))
    rec = dict(valid_records()[0], event_id="hostile-1", artist_id=ARTIST)
    assert a.request("POST", "/v1/uses", "service", json=rec)[0] == 200
    assert a.request("PUT", f"/v1/artists/{ARTIST}/preferences", "artist", json={"purposes": {"fraud_detection": "deny"}})[0] == 200
    yield a
    a.close()


QUERY_NAMES = ["index", "size", "old", "new", "purpose", "content_id", "decision", "since", "until", "cursor", "limit",
               "format", "x", ""]
QUERY_VALUES = st.one_of(
    TEXT, st.integers(-5, 10**20).map(str), st.sampled_from(["00", "007", "+1", " 1", "1 ", "1_000", "١", "²", "0x1", "1e3",
                                                          "9223372036854775807", "9223372036854775808", "99999999999999999999",
                                                          "YWZ0ZXI6MQ", "YWZ0ZXI6OTk5OTk5OTk5OTk5OTk5OTk5OQ", "json", "csv"]))
QUERY_PATHS = ["/v1/proof/inclusion", "/v1/proof/consistency", f"/v1/artists/{ARTIST}/uses", f"/v1/artists/{ARTIST}/audit",
               "/v1/log", "/v1/stats", "/checkpoint"]


@fast(250)
@given(st.sampled_from(QUERY_PATHS), st.lists(st.tuples(st.sampled_from(QUERY_NAMES), QUERY_VALUES), max_size=5),
       st.sampled_from([None, "service", "artist", "auditor"]))
def test_query_parameters(app: App, path: str, params: list[tuple[str, str]], role: str | None) -> None:
    app.checked("GET", path, role, params=params)


SEGMENT = st.one_of(
    TEXT.map(lambda s: s.replace("/", "")),
    st.binary(max_size=12).map(lambda b: "".join(f"%{c:02X}" for c in b)),
    st.integers(-3, 2**64).map(str),
    st.sampled_from(["..", ".", "%2e%2e", "%2F", "%00", "%", "%zz", "0", "00", "1", "x" * 300, "sc:user:hostile"]),
)
PATH_TEMPLATES = ["/v1/leaves/{}", "/v1/receipts/{}", "/v1/entries/{}", "/v1/policies/{}", "/v1/artists/{}/uses",
                  "/v1/artists/{}/audit", "/v1/artists/{}/preferences", "/tile/{}", "/tile/0/{}", "/tile/entries/{}", "/{}"]


def _quote(s: str) -> str:
    # keep %XX as given (raw bytes on the wire), percent-encode everything else that is not URL-safe
    safe = set(string.ascii_letters + string.digits + "-._~:%@!$&'()*+,;=")
    return "".join(c if c in safe else "".join(f"%{b:02X}" for b in c.encode("utf-8", "surrogatepass")) for c in s)


@fast(250)
@given(st.sampled_from(PATH_TEMPLATES), SEGMENT, st.sampled_from([None, "service", "artist", "auditor"]),
       st.sampled_from(["GET", "HEAD"]))
def test_path_parameters(app: App, template: str, segment: str, role: str | None, method: str) -> None:
    app.checked(method, URL(template.format(_quote(segment)), encoded=True), role)


@fast(150)
@given(st.data())
def test_refused_writes_change_nothing(app: App, data: st.DataObject) -> None:
    rec = dict(valid_records()[1], artist_id=WRITER)  # another artist: ARTIST's bundle stays two entries
    target = data.draw(st.sampled_from(["uses", "prefs"]))
    if target == "uses":
        raw = data.draw(mutated_bytes(orjson.dumps({"records": [rec]})))
        url, method, role = "/v1/uses", "POST", data.draw(st.sampled_from(["service", "artist", "auditor", None]))
    else:
        raw = data.draw(mutated_bytes(b'{"no_ai":true,"purposes":{"fraud_detection":"deny"},"content":{}}'))
        url, method, role = f"/v1/artists/{WRITER}/preferences", "PUT", data.draw(st.sampled_from(["service", "artist", "auditor"]))
    ctype = data.draw(st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain", "application/x-www-form-urlencoded"]))
    before = app.state()
    status, _ = app.checked(method, url, role, data=raw, headers={"Content-Type": ctype})
    if status >= 400:
        assert app.state() == before, (method, url, role, status)


# --- tile paths ------------------------------------------------------------------------------------

TILES = st.builds(lambda level, index, width, entries: Tile(0 if entries else level, index >> (8 * level), width, entries),
                  st.integers(0, 5), st.integers(0, 2**40), st.integers(1, TILE_WIDTH), st.booleans())


@fast(400)
@given(st.one_of(TEXT, TILES.map(tile_path).flatmap(lambda p: mutated_bytes(p.encode()).map(lambda b: b.decode("utf-8", "replace")))))
def test_tile_paths_parse_canonically_or_fail_cleanly(path: str) -> None:
    try:
        t = parse_tile_path(path)
    except ValidationError:
        return
    assert tile_path(t) == path  # accepted only in its one canonical spelling


@fast(200)
@given(st.one_of(TILES.map(tile_path), TILES.map(tile_path).flatmap(lambda p: mutated_bytes(p.encode())).map(
    lambda b: "".join(chr(c) if 32 < c < 127 and chr(c) not in "?#%" else f"%{c:02X}" for c in b))))
def test_tile_requests(app: App, path: str) -> None:
    # "//…" would be a network-path reference, not a path; "" is the home page.
    assume(path and not path.startswith("/"))
    status, body = app.checked("GET", URL("/" + path, encoded=True))
    if status == 200:
        t = parse_tile_path(URL("/" + path, encoded=True).path[1:])
        if t.entries:
            assert len(decode_bundle(body, t.width)) == t.width
        else:
            assert len(body) == 32 * t.width


# --- checkpoints with unknown signature lines ------------------------------------------------------------


@cache
def log_key() -> tuple[Signer, Verifier]:
    skey, vkey = generate_key("example.com/hostile")
    return Signer.from_key(skey), Verifier.from_key(vkey)


@cache
def other_signer(name: str, alg: int) -> Signer:
    return Signer.from_key(generate_key(name, alg)[0])


@st.composite
def unknown_signatures(draw: st.DrawFn, text: bytes) -> list[bytes]:
    """1–4 signature lines of keys the verifier does not know: witnesses' real cosignatures, random
    bytes under random names, and random bytes under the log's own name with another key id."""
    lines = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["witness", "random", "lookalike"]))
        if kind == "witness":
            alg = draw(st.sampled_from([1, ALG_COSIGNATURE_V1]))
            lines.append(other_signer(f"witness{draw(st.integers(0, 2))}.example", alg).signature(text).line())
        else:
            name = log_key()[1].name if kind == "lookalike" else draw(
                st.text(st.characters(min_codepoint=33, max_codepoint=0x10FFFF, exclude_categories=("Cs",)), min_size=1, max_size=20))
            key_id = draw(st.integers(0, 2**32 - 1))
            assume(is_valid_name(name) and key_id != log_key()[1].key_hash)
            lines.append(Signature(name, key_id, draw(st.binary(min_size=1, max_size=80))).line())
    return lines


def with_unknown_lines(signed: bytes, lines: list[bytes], position: int) -> tuple[bytes, list[tuple[int, int]]]:
    """`signed` with `lines` inserted among its signature lines; and the byte ranges of the inserted lines."""
    text, _, sigs = signed.partition(b"\n\n")
    own = [line + b"\n" for line in sigs.split(b"\n") if line]
    position = min(position, len(own))
    head = text + b"\n\n" + b"".join(own[:position])
    ranges, out = [], bytearray(head)
    for line in lines:
        ranges.append((len(out), len(out) + len(line)))
        out += line
    return bytes(out + b"".join(own[position:])), ranges


class MemoVerifier(Verifier):
    """The same verifier, remembering its answers: most flips leave the signed text and signature alone,
    and Ed25519 would otherwise be most of the time these exhaustive tests take."""

    _seen: dict[tuple[str, bytes, bytes], bool] = {}

    @classmethod
    def of(cls, v: Verifier) -> MemoVerifier:
        return cls(name=v.name, key_hash=v.key_hash, key=v.key, alg=v.alg, public=v.public)

    def verify(self, msg: bytes, sig: bytes) -> bool:
        k = (self.key, msg, sig)
        if k not in self._seen:
            self._seen[k] = super().verify(msg, sig)
        return self._seen[k]


def flips(data: bytes) -> Iterator[tuple[int, bytes]]:
    for bit in range(len(data) * 8):
        b = bytearray(data)
        b[bit // 8] ^= 1 << (bit % 8)
        yield bit // 8, bytes(b)


def only_rejected(data: bytes, check: Callable[[bytes], Any], ignored: list[tuple[int, int]], errors: type[Exception] | tuple = TlogError) -> int:
    """Flips every bit of `data`: `check` must raise one of `errors`, except for a flip inside an
    `ignored` range, after which it may instead return what it returned for `data`. Returns the count."""
    want = check(data)
    n = 0
    for pos, bad in flips(data):
        n += 1
        try:
            got = check(bad)
        except errors:
            continue
        assert any(a <= pos < b for a, b in ignored), f"flip at byte {pos} ({data[pos:pos + 1]!r}) went unnoticed"
        assert got == want
    return n


@fast(10)
@given(st.integers(0, 2**63 - 1), st.binary(min_size=32, max_size=32), st.integers(0, 2), st.data())
def test_checkpoint_with_unknown_signatures(size: int, root: bytes, position: int, data: st.DataObject) -> None:
    signer, verifier = log_key()
    body = Checkpoint(verifier.name, size, root).body()
    signed, ranges = with_unknown_lines(sign_note(body, [signer]), data.draw(unknown_signatures(body)), position)
    cp, note = open_checkpoint(signed, [verifier])
    assert (cp.size, cp.root) == (size, root) and len(note.verified) == 1
    memo = MemoVerifier.of(verifier)
    only_rejected(signed, lambda b: open_checkpoint(b, [memo])[0], ranges, NoteError)


# --- receipts and audit bundles from the server ------------------------------------------------------------


def test_served_receipts_reject_every_bit_flip(app: App) -> None:
    status, body = app.checked("GET", f"/v1/artists/{ARTIST}/audit", "artist")
    index = orjson.loads(body)["entries"][0]["index"]
    status, raw = app.checked("GET", f"/v1/receipts/{index}", "artist")
    receipt = Receipt.parse(raw)
    head, _, cp = raw.partition(b"\n\n")
    witness = other_signer("witness0.example", ALG_COSIGNATURE_V1)
    text = cp.partition(b"\n\n")[0] + b"\n"
    cp2, ranges = with_unknown_lines(cp, [witness.signature(text).line(), Signature("sunlight.example", 7, b"\x01" * 64).line()], 1)
    data = head + b"\n\n" + cp2
    offset = len(head) + 2
    memo = MemoVerifier.of(app.verifier)
    n = only_rejected(data, lambda b: verify_receipt(Receipt.parse(b), None, [memo]),
                      [(a + offset, b + offset) for a, b in ranges], ProofError)
    assert n == len(data) * 8 and receipt.extra is not None


@fast(200)
@given(st.data())
def test_mutated_receipts_fail_cleanly(app: App, data: st.DataObject) -> None:
    raw = app.request("GET", "/v1/receipts/3", "auditor")[2]
    bad = data.draw(mutated_bytes(raw))
    try:
        receipt = Receipt.parse(bad)
    except NoteError:
        return
    try:
        verify_receipt(receipt, None, [app.verifier])
    except ProofError:
        return
    assert bad == raw or Receipt.parse(bad).format() == bad  # only a canonical, verifying receipt gets through


def _bundle(app: App) -> tuple[bytes, list[tuple[int, int]]]:
    """The artist's audit bundle as served, with unknown signature lines added to its checkpoint (as a
    log with witnesses serves it), re-encoded; and the byte ranges those lines occupy in the JSON."""
    bundle = orjson.loads(app.checked("GET", f"/v1/artists/{ARTIST}/audit", "artist")[1])
    assert len(bundle["entries"]) == 2  # the use and the preference change of the fixture, nothing else
    cp = bundle["checkpoint"].encode()
    text = cp.partition(b"\n\n")[0] + b"\n"
    lines = [other_signer("witness1.example", ALG_COSIGNATURE_V1).signature(text).line(),
             Signature("sunlight.example", 99, b"\x02" * 40).line()]
    cp2, _ = with_unknown_lines(cp, lines, 1)
    bundle["checkpoint"] = cp2.decode()
    data = orjson.dumps(bundle)
    ranges = []
    for line in lines:
        encoded = orjson.dumps(line.decode())[1:-1]  # as it appears inside the JSON string
        start = data.index(encoded)
        ranges.append((start, start + len(encoded)))
    return data, ranges


def test_audit_bundle_rejects_every_bit_flip(app: App) -> None:
    data, ranges = _bundle_cached(app)
    verifier = MemoVerifier.of(app.verifier)
    report = verify_bundle(loads_strict(data), verifier)
    assert report.entries == 2
    only_rejected(data, lambda b: verify_bundle(loads_strict(b), verifier).entries, ranges)


def test_bundle_refuses_what_strict_json_cannot_hold_or_spells_twice(app: App) -> None:
    """Regressions: verify_bundle took non-canonical base64 (the unused low bits of a hash's last
    character, so a flipped bit passed) and raised TypeError/UnicodeError on values loads_strict would
    never return (a caller using json.loads hands over lone surrogates)."""
    bundle = orjson.loads(_bundle_cached(app)[0])
    proof = bundle["entries"][0]["proof"]
    last = proof[0][-2]  # the character before "=" carries 2 unused bits
    proof[0] = proof[0][:-2] + "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"[
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".index(last) ^ 1] + "="
    with pytest.raises(VerificationError, match="canonical base64"):
        verify_bundle(bundle, app.verifier)
    for path, value in ((("checkpoint",), "\ud800"), (("entries", 0, "details", "event_id"), "\ud800"),
                        (("entries", 0, "index"), 1.0), (("checkpoint",), 7)):
        bad = orjson.loads(_bundle_cached(app)[0])
        parent = bad
        for p in path[:-1]:
            parent = parent[p]
        parent[path[-1]] = value
        with pytest.raises(ValidationError):
            verify_bundle(bad, app.verifier)


def _paths(value: Any, prefix: tuple = ()) -> Iterator[tuple]:
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, prefix + (i,))


@fast(300)
@given(st.data())
def test_structurally_mutated_bundles_fail_cleanly(app: App, data: st.DataObject) -> None:
    raw, _ = _bundle_cached(app)
    bundle = orjson.loads(raw)
    paths = list(_paths(bundle))
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(paths))
        if not path:
            bundle = data.draw(JSON)
            break
        parent = bundle
        try:
            for p in path[:-1]:
                parent = parent[p]
            if not isinstance(parent, (dict, list)):
                continue  # an earlier mutation replaced this part
            if data.draw(st.booleans()):
                parent[path[-1]] = data.draw(JSON)
            else:
                del parent[path[-1]]
        except (KeyError, IndexError, TypeError):
            continue
    try:
        verify_bundle(bundle, app.verifier)
    except TlogError:
        return
    # Accepted: then it must be the bundle (mutations that put back the same value are possible).
    assert orjson.dumps(bundle) == raw or verify_bundle(orjson.loads(raw), app.verifier).entries == len(bundle["entries"])


_BUNDLE: dict[int, tuple[bytes, list[tuple[int, int]]]] = {}


def _bundle_cached(app: App) -> tuple[bytes, list[tuple[int, int]]]:
    if id(app) not in _BUNDLE:
        _BUNDLE[id(app)] = _bundle(app)
    return _BUNDLE[id(app)]


def test_proof_json_from_the_server_is_what_verifies(app: App) -> None:
    """The served inclusion proof for the bundle's first entry verifies, and any flipped hash does not
    (the per-bit property of the math itself is test_merkle's)."""
    cp, _ = open_checkpoint(app.request("GET", "/checkpoint")[2], [app.verifier])
    bundle = orjson.loads(_bundle_cached(app)[0])
    e = bundle["entries"][0]
    body = orjson.loads(app.checked("GET", f"/v1/proof/inclusion?index={e['index']}&size={cp.size}")[1])
    proof = [base64.b64decode(h) for h in body["proof"]]
    leaf = base64.b64decode(e["leaf"])
    merkle.verify_inclusion(merkle.leaf_hash(leaf), e["index"], cp.size, proof, cp.root)
    for i in range(len(proof)):
        for bit in range(256):
            bad = list(proof)
            bad[i] = (int.from_bytes(bad[i], "big") ^ (1 << bit)).to_bytes(32, "big")
            with pytest.raises(ProofError):
                merkle.verify_inclusion(merkle.leaf_hash(leaf), e["index"], cp.size, bad, cp.root)


def _cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize("role, path, status", [
    # Regressions found by the fuzzers: each was a 500 (SQLite integer overflow) or an accepted typo.
    ("auditor", "/v1/receipts/9223372036854775807", 400),
    ("auditor", "/v1/receipts/9223372036854775806", 404),
    ("auditor", "/v1/receipts/9223372036854775808", 400),
    ("auditor", "/v1/entries/9223372036854775807", 400),
    ("auditor", "/v1/entries/99999999999", 404),
    ("auditor", f"/v1/artists/{ARTIST}/uses?cursor={_cursor('after:9999999999999999999')}", 400),
    ("auditor", f"/v1/artists/{ARTIST}/uses?cursor={_cursor('after:9223372036854775806')}", 200),
    ("service", "/v1/artists/" + "x" * 257 + "/preferences", 400),
    ("service", "/v1/artists/a%20b/preferences", 400),
    ("service", "/v1/artists/a%00b/preferences", 400),
    ("artist", "/v1/artists/" + "x" * 257 + "/preferences", 403),  # not its own: 403 before anything else
    ("auditor", "/v1/artists/" + "x" * 257 + "/audit", 400),
    ("auditor", f"/v1/artists/{ARTIST}/uses?decision=maybe", 400),
    ("auditor", f"/v1/artists/{ARTIST}/uses?purpose=Recommendation", 400),
    ("auditor", f"/v1/artists/{ARTIST}/uses?content_id=a%20b", 400),
    ("auditor", f"/v1/artists/{ARTIST}/uses?decision=refused&purpose=fraud_detection", 200),
])
def test_edges_found_by_fuzzing(app: App, role: str, path: str, status: int) -> None:
    assert app.checked("GET", URL(path, encoded=True), role)[0] == status
