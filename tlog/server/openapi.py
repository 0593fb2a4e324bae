"""The OpenAPI 3.1 description of the whole HTTP API (SPEC §6), served at `GET /openapi.json`.

Hand-written and static, so that it says what the API promises rather than what the code happens to
do: tests/test_openapi.py checks that every route the app registers is described here and vice versa,
and tests/e2e/test_fuzz.py runs schemathesis from it against a real server (every answer must be
documented and match its schema; data the schema forbids must be refused with a 4xx).

The request schemas are as strict as the server where JSON Schema can say it (unknown fields, types,
lengths, patterns) and never stricter; what JSON Schema cannot say (integers only, no duplicate keys,
"printable", not in the future, a purpose of the policy in force) is in the descriptions.
`x-tlog-roles` on each operation names the roles that may call it."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from .. import __version__
from ..export import CSV_COLUMNS

routes = web.RouteTableDef()

MAX_INT64 = 2**63 - 1
MAX_SAFE_INT = 2**53 - 1

# --- shared pieces ---------------------------------------------------------------------------------

_HEX32 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
_B64_HASH = {"type": "string", "pattern": "^[A-Za-z0-9+/]{43}=$", "description": "a SHA-256 hash, base64"}
_B64 = {"type": "string", "description": "exact bytes, base64"}
_PROOF = {"type": "array", "items": _B64_HASH, "maxItems": 126, "description": "hashes, base64"}
_PLATFORM_ID = {
    "type": "string", "minLength": 1, "maxLength": 256, "pattern": "^[!-~]+$",
    "description": "an opaque platform id: 1–256 printable ASCII characters, no spaces (a log may narrow this "
                   "with `tlog init --id-pattern`); compared exactly",
}
_TEXT_128 = {"type": "string", "minLength": 1, "maxLength": 128}
_TTL = {"type": "integer", "minimum": 1, "maximum": 86400, "description": "the token's life in seconds"}
_RFC3339 = {
    "type": "string", "format": "date-time",
    "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2})$",
    "description": "RFC 3339 date-time with a zone",
}
_LOGGED_AT = {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z$"}
_PURPOSE_CODE = {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,63}$"}
_DECISION = {"type": "string", "enum": ["allowed", "allowed_override", "flagged", "refused"]}
_DATE_OR_TIME: dict[str, Any] = {"anyOf": [{"type": "string", "format": "date", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"}, _RFC3339],
                 "description": "a date (UTC) or an RFC 3339 date-time with a zone"}
_PHASE = {"type": "string", "enum": ["training", "fine_tuning", "evaluation", "inference", "embedding_extraction", "indexing"]}
_LEAF_TYPE = {"type": "string", "enum": ["use", "refusal", "preference", "policy", "binding", "erasure", "log", "map"]}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(props: dict[str, Any], required: list[str] | None = None, *, closed: bool = True, **kw: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": props, "required": required if required is not None else list(props)}
    if closed:
        out["additionalProperties"] = False
    return {**out, **kw}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


_SETTINGS = _obj({
    "no_ai": {"type": "boolean", "description": "the platform's 'no AI' tag: refuses both training purposes and third_party_ai_access"},
    "strict": {"type": "boolean", "description": "refuses every purpose"},
    "purposes": {"type": "object", "propertyNames": _PURPOSE_CODE, "additionalProperties": {"enum": ["allow", "deny"]}},
}, required=[])

# The same settings as a merge patch (RFC 7396): any member may be null, which removes it.
_SETTINGS_PATCH = _obj({
    "no_ai": _nullable({"type": "boolean"}), "strict": _nullable({"type": "boolean"}),
    "purposes": _nullable({"type": "object", "propertyNames": _PURPOSE_CODE,
                           "additionalProperties": {"enum": ["allow", "deny", None]}}),
}, required=[])

_PURPOSE = _obj({
    "covers": {"type": "string"}, "category": _nullable({"type": "string"}),
    "default": {"enum": ["allowed", "flagged", "refused"]}, "override_eligible": {"type": "boolean"},
})
_STATS_ROW = _obj({"type": _LEAF_TYPE, "purpose": _nullable({"type": "string"}), "phase": _nullable({"type": "string"}),
                   "decision": _nullable({"type": "string"}),
                   "leaves": {"type": "integer", "minimum": 0},
                   "uses": {"type": "integer", "minimum": 0, "description": "invocations (uses and refusals only)"}})
_ERASED = _nullable(_obj({"at": _LOGGED_AT, "reason": {"type": "string"}},
                         description="erased on request (SPEC §2.2): when (its erasure leaf's logged_at) and why"))
_ENTRY = _obj({
    "index": {"type": "integer", "minimum": 0}, "type": _LEAF_TYPE, "logged_at": _LOGGED_AT,
    "aseq": _nullable({"type": "integer", "minimum": 1}),
    "details": _nullable({"type": "object", "description": "the private details the leaf commits to (SPEC §2.2); "
                                                          "null once erased"}),
    "erased": _ERASED,
})

SCHEMAS: dict[str, Any] = {
    "Error": _obj({
        "error": _obj({
            "code": {"type": "string", "description": "stable, machine-readable"},
            "message": {"type": "string", "description": "one line for a person"},
            "details": {"type": "array", "items": {"type": "object"},
                        "description": "per-field problems, each {\"field\", \"message\"}"},
        }),
    }),
    "System": _obj({"id": _TEXT_128, "model": _TEXT_128, "version": _TEXT_128}),
    "UseRecord": _obj({
        "event_id": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$",
                     "description": "the caller's idempotency key, unique per service"},
        "content_id": _PLATFORM_ID,
        "artist_id": _PLATFORM_ID,
        "purpose": {**_PURPOSE_CODE, "description": "a purpose code of the policy in force (GET /v1/log)"},
        "phase": _PHASE,
        "system": _ref("System"),
        "occurred_at": {**_RFC3339, "description": "RFC 3339 with a zone, not more than 5 minutes in the future"},
        "invocations": {"type": "integer", "minimum": 1, "maximum": MAX_SAFE_INT, "default": 1,
                        "description": "uses aggregated in one window (a JSON integer: 1.0 is refused)"},
        "window_end": _nullable(_RFC3339),
        "detail": _nullable({"type": "string", "maxLength": 500}),
        "basis": {"enum": ["legal_obligation", "legitimate_interest_security", None],
                  "description": "only to claim an override (SPEC §4)"},
    }, required=["event_id", "content_id", "artist_id", "purpose", "phase", "system", "occurred_at"],
        description="One AI use (SPEC §2.1). Strict JSON: no unknown fields, floats, duplicate keys, lone surrogates "
                    "or integers beyond 2^53; every problem is answered 400 naming its field."),
    "UseBatch": _obj({"records": {"type": "array", "items": _ref("UseRecord"), "minItems": 1, "maxItems": 1000}},
                     description="1–1000 records (`tlog serve --max-records`), logged all or nothing"),
    "UseResult": _obj({
        "event_id": {"type": "string"}, "index": {"type": "integer", "minimum": 0}, "decision": _DECISION,
        "leaf_hash": _HEX32, "duplicate": {"type": "boolean"}, "receipt_url": {"type": "string"},
        "receipt": {"type": "string", "description": "c2sp.org/tlog-proof@v1 (single-record requests only)"},
    }, required=["event_id", "index", "decision", "leaf_hash", "duplicate", "receipt_url"]),
    "UseResults": _obj({"results": {"type": "array", "items": _ref("UseResult")}}),
    "Preferences": _obj({
        **_SETTINGS["properties"],
        "content": {"type": "object", "propertyNames": _PLATFORM_ID, "additionalProperties": _SETTINGS},
    }, required=[], description="An artist's AI preferences (SPEC §4); a PUT replaces the whole document"),
    "ContentArtistsBody": _obj({
        "artists": {"type": "array", "items": _PLATFORM_ID, "minItems": 1, "maxItems": 100, "uniqueItems": True,
                    "description": "every rightsholder of the content: the list replaces the one it had"},
    }, description="The artists a content is bound to (SPEC §2.1)"),
    "ContentArtists": _obj({
        "content_id": {"type": "string"}, "artists": {"type": "array", "items": {"type": "string"}},
        "changes": {"type": "array", "items": _obj({
            "artist_id": {"type": "string"}, "change": {"enum": ["bind", "release"]},
            "index": {"type": "integer", "minimum": 0}, "leaf_hash": _HEX32,
        }), "description": "the binding leaf appended in each affected artist's chain; empty if nothing changed"},
    }),
    "ArtistPreferences": _obj({"artist_id": {"type": "string"}, "preferences": _ref("Preferences")}),
    "PreferencesPatch": _obj({
        **_SETTINGS_PATCH["properties"],
        "content": _nullable({"type": "object", "propertyNames": _PLATFORM_ID,
                              "additionalProperties": _nullable(_SETTINGS_PATCH)}),
    }, required=[], description="An RFC 7396 JSON merge patch of the preferences: the members named replace or "
                                "merge into the document, null removes one (e.g. {\"purposes\": {\"recommendation\": "
                                "null}})"),
    "PreferencesSet": _obj({
        "artist_id": {"type": "string"}, "index": {"type": "integer", "minimum": 0}, "leaf_hash": _HEX32,
        "by": {"enum": ["artist", "service"]}, "preferences": _ref("Preferences"),
        "dropped": {"type": "array", "items": _obj({
            "setting": {"type": "string", "description": "its path, e.g. strict, purposes.fraud_detection, "
                                                          "content[\"sc:track:1\"].no_ai"},
            "was": {"enum": [True, "allow", "deny"]},
            "now": {"enum": [None, "allow", "deny"]},
        }), "description": "the settings of the previous document this change removed or changed (an opt-in "
                           "allow, strict, a per-content setting…): a whole-document PUT says here what it dropped"},
    }),
    "TokenRequest": {"oneOf": [
        _obj({"artist_id": _PLATFORM_ID, "ttl_s": _TTL}),
        _obj({"artist_ids": {"type": "array", "items": _PLATFORM_ID, "minItems": 1, "maxItems": 1000}, "ttl_s": _TTL}),
    ], "description": "the artist (or, for a label or manager, the artists) the token acts for, and its life"},
    "TokenIssued": _obj({
        "token": {"type": "string", "description": "the bearer token, shown once: hand it to the artist page as "
                                                   "/artist#token=…"},
        "token_id": {"type": "integer", "minimum": 1},
        "artist_ids": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "expires_at": _LOGGED_AT,
    }),
    "Leaf": _obj({
        "v": {"const": 2}, "type": _LEAF_TYPE, "prev": _HEX32, "logged_at": _LOGGED_AT, "purpose": _PURPOSE_CODE,
        "phase": _PHASE, "decision": _DECISION, "policy": {"type": "string"}, "artist": _HEX32,
        "aseq": {"type": "integer", "minimum": 1}, "aprev": _nullable({"type": "integer", "minimum": 0}),
        "invocations": {"type": "integer", "minimum": 1, "maximum": MAX_SAFE_INT},
        "details": _HEX32, "by": {"enum": ["artist", "service"]}, "effective_at": _LOGGED_AT,
        "erased": {"type": "integer", "minimum": 0}, "origin": {"type": "string"}, "vrf": _HEX32, "root": _HEX32,
    }, required=["v", "type", "prev", "logged_at"],
        description="A public leaf (SPEC §2.2, leaf format 2): RFC 8785 canonical JSON; fields that do not apply to a "
                    "type are omitted. Index 0 is the `log` leaf; every checkpoint ends at a `map` leaf (SPEC §2.3)"),
    "MapProof": _obj({
        "tag": _HEX32, "depth": {"type": "integer", "minimum": 0, "maximum": 256},
        "siblings": {"type": "array", "items": _HEX32, "maxItems": 256, "description": "the root's side first"},
        "found": _nullable(_obj({"aseq": {"type": "integer", "minimum": 1}, "head": {"type": "integer", "minimum": 0}})),
        "other": _nullable(_obj({"tag": _HEX32, "aseq": {"type": "integer", "minimum": 1},
                                 "head": {"type": "integer", "minimum": 0}})),
    }, description="A SPEC §2.3 map proof: `found` if the tag is in the map, else `other` (the one key in its "
                   "place) or neither (an empty subtree)"),
    "MapProofAnswer": _obj({
        "size": {"type": "integer", "minimum": 3, "description": "the checkpoint the proof is for"},
        "map_index": {"type": "integer", "minimum": 2, "description": "size - 1: the map leaf ending that checkpoint"},
        "root": {**_HEX32, "description": "the map root, as that map leaf states it (GET /v1/leaves/{map_index})"},
        "proof": _ref("MapProof"),
    }),
    "Purpose": _PURPOSE,
    "PolicyDocument": _obj({
        "purposes": {"type": "object", "additionalProperties": _ref("Purpose")}, "text": {"type": "string"},
        "notice_days": {"type": "integer", "minimum": 0, "maximum": 3650,
                        "description": "days of notice a loosening of this policy needs (SPEC §4 Notice)"},
    }),
    "LogInfo": _obj({
        "origin": {"type": "string"},
        "verifier_keys": {"type": "array", "items": {"type": "string"}, "minItems": 1,
                          "description": "golang.org/x/mod/sumdb/note verifier keys, the primary first"},
        "vrf_key": {**_HEX32, "description": "the ECVRF public key of the artist tags, as the log leaf (index 0) commits to it"},
        "size": {"type": "integer", "minimum": 0, "description": "leaves under the published checkpoint"},
        "policy": _nullable({"type": "string"}),
        "purposes": {"type": "array", "items": _obj({"code": _PURPOSE_CODE, **_PURPOSE["properties"]})},
        "witness_policy": _nullable(_ref("WitnessQuorum")),
    }),
    "WitnessQuorum": _obj({
        "quorum": {"type": "string", "description": "the witness or group whose cosignature publishes a checkpoint"},
        "witnesses": {"type": "array", "items": _obj({
            "name": {"type": "string", "description": "the witness's name in the policy (what quorum and groups name)"},
            "key": {"type": "string", "description": "its c2sp.org/tlog-cosignature (cosignature/v1) verifier key"},
        })},
        "groups": {"type": "array", "items": _obj({
            "name": {"type": "string"},
            "threshold": {"type": "integer", "minimum": 1, "description": "how many members must cosign"},
            "members": {"type": "array", "items": {"type": "string"}, "minItems": 1,
                        "description": "witnesses or groups listed before this one"},
        })},
    }, description="The witnesses of the server's c2sp.org/tlog-policy file (`tlog serve --witness-policy`): "
                   "`/checkpoint` carries their cosignatures and moves only once the quorum has cosigned. Null "
                   "without a witness policy. These keys come from the log itself: a careful verifier gets them "
                   "from the witnesses and runs `tlog audit --witness-policy` or `tlog monitor --witness-policy`."),
    "InclusionProof": _obj({"index": {"type": "integer", "minimum": 0}, "size": {"type": "integer", "minimum": 1},
                            "proof": {"type": "array", "items": _B64_HASH, "maxItems": 63}}),
    "ConsistencyProof": _obj({"old": {"type": "integer", "minimum": 1}, "new": {"type": "integer", "minimum": 1},
                              "proof": {"type": "array", "items": _B64_HASH, "maxItems": 126}}),
    "StatsRow": _STATS_ROW,
    "Stats": _obj({
        "size": {"type": "integer", "minimum": 0, "description": "the published checkpoint's size: leaves [0, size) are counted"},
        "since": _nullable(_LOGGED_AT), "until": _nullable(_LOGGED_AT),
        "purpose": _nullable({"type": "string"}), "phase": _nullable({"type": "string"}),
        "totals": {"type": "array", "items": _ref("StatsRow")},
        "by_day": {"type": "array", "description": "the period's latest 366 days with leaves, by day of logged_at (UTC)",
                   "items": _obj({"day": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"},
                                  **_STATS_ROW["properties"]})},
        "days_left_out": {"type": "integer", "minimum": 0,
                          "description": "earlier days with leaves, counted in totals but not listed in by_day"},
    }),
    "PolicyRef": _obj({"id": {"type": "string"}, "index": {"type": "integer", "minimum": 0}, "url": {"type": "string"}}),
    "Entry": _ENTRY,
    "EntryWithLeaf": _obj({**_ENTRY["properties"], "leaf": _ref("Leaf"), "leaf_hash": _HEX32}),
    "EntryPage": _obj({"artist_id": {"type": "string"}, "entries": {"type": "array", "items": _ref("Entry")},
                       "next_cursor": _nullable({"type": "string"})}),
    "AuditEntry": _obj({
        "index": {"type": "integer", "minimum": 0}, "leaf": _B64, "details": _nullable({"type": "object"}),
        "erased": _nullable(_obj({"at": {"type": ["integer", "string"], "description": "the erasure: its leaf or time"},
                                  "reason": {"type": "string"}})),
        "proof": _PROOF,
    }),
    "AuditBundle": _obj({
        "version": {"const": 2}, "origin": {"type": "string"}, "artist_id": {"type": "string"}, "tag": _HEX32,
        "vrf": _obj({"key": _HEX32, "proof": {"type": "string", "pattern": "^[0-9a-f]{160}$"}},
                    description="the log's VRF public key and the 80-byte proof that `tag` is the artist's"),
        "checkpoint": {"type": "string", "description": "the signed checkpoint the proofs are against"},
        "log": _obj({"leaf": _B64, "proof": _PROOF}, description="the log leaf (index 0)"),
        "since": _nullable({"type": "integer", "minimum": 0}),
        "consistency": _nullable(_PROOF),
        "entries": {"type": "array", "items": _ref("AuditEntry")},
        "preferences_in_force": _nullable(_obj({"index": {"type": "integer", "minimum": 0}, "leaf": _B64,
                                                "details": {"type": "object"}, "proof": _PROOF})),
        "erasures": {"type": "array", "items": _obj({"index": {"type": "integer", "minimum": 0}, "leaf": _B64, "proof": _PROOF})},
        "map": _nullable(_obj({"index": {"type": "integer", "minimum": 0}, "leaf": _B64, "proof": _PROOF,
                               "map_proof": _ref("MapProof")})),
        "policies": {"type": "array", "items": _obj({"id": {"type": "string"}, "index": {"type": "integer", "minimum": 0},
                                                     "leaf": _B64, "proof": _PROOF, "document": _B64})},
        "next_aseq": _nullable({"type": "integer", "minimum": 1}),
    }, description="Everything an artist needs to check its history offline (`tlog audit verify`; SPEC §6, version 2)"),
    "Health": _obj({"ok": {"const": True}, "size": {"type": "integer", "minimum": 0}}),
    "PolicyChange": _obj({
        "purpose": _nullable(_PURPOSE_CODE),
        "change": {"enum": ["added", "removed", "default", "override_eligible", "category", "covers", "notice_days", "text"]},
        "from": {"description": "the value before (a purpose for `removed`; null for `added`)"},
        "to": {"description": "the value after (a purpose for `added`; null for `removed`)"},
        "loosens": {"type": "boolean", "description": "this change makes the policy loosen (SPEC §4)"},
        "summary": {"type": "string", "description": "one line, e.g. \"model_training_generative: refused → allowed\""},
        "words": {"type": "string", "description": "the change in plain words, as the public page shows it"},
    }),
    "PolicyDiff": _obj({
        "from": {"type": "string"}, "to": {"type": "string"},
        "loosens": {"type": "boolean", "description": "any change loosens: taking effect needs the notice promised"},
        "changes": {"type": "array", "items": _ref("PolicyChange")},
    }, description="What changed from one policy version to another, purpose by purpose (SPEC §4)"),
    "FeedKey": _obj({
        "id": {"type": "integer", "minimum": 1},
        "key": {"type": "string", "description": "shown this once; the log keeps its SHA-256 only"},
        "url": {"type": "string", "description": "the feed's address with the key"},
    }),
    "FeedKeyRevoked": _obj({"id": {"type": "integer", "minimum": 1}, "revoked": {"const": True}}),
}

_ERROR_TEXT = {
    400: "bad input: the details name each bad field; nothing changed",
    401: "no valid token: missing, malformed, unknown or revoked",
    403: "the token's role (or artist) may not do this",
    404: "not found",
    409: "conflict: the event_id was logged before with a different body, or a record names an artist its content "
         "is not bound to (nothing of the request was logged)",
    413: "the body is too large (`tlog serve --max-body`)",
    415: "send the body as application/json",
    425: "with a witness policy: the leaf is not yet under a published (cosigned) checkpoint; see Retry-After",
    429: "too many requests without a valid token, or with a failed one; see Retry-After",
    503: "the log cannot answer now (storage unavailable, or no witnessed checkpoint yet)",
}


def _error(status: int) -> dict[str, Any]:
    resp: dict[str, Any] = {"description": _ERROR_TEXT[status], "content": {"application/json": {"schema": _ref("Error")}}}
    if status in (425, 429):
        resp["headers"] = {"Retry-After": {"schema": {"type": "string"}}}
    if status == 401:
        resp["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
    return resp


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _text(description: str, media: str = "text/plain") -> dict[str, Any]:
    return {"description": description, "content": {media: {"schema": {"type": "string"}}}}


PUBLIC, SERVICE, ARTIST, AUDITOR = "public", "service", "artist", "auditor"


def _op(summary: str, roles: list[str], ok: dict[str, Any], errors: tuple[int, ...] = (), *,
        params: list[dict[str, Any]] | None = None, body: dict[str, Any] | None = None,
        description: str | None = None, example: dict[str, Any] | None = None, status: int = 200,
        media: tuple[str, ...] = ("application/json",)) -> dict[str, Any]:
    statuses = sorted({*errors, 401, 429, 503} | ({400, 413, 415} if body else set()))
    op: dict[str, Any] = {
        "summary": summary,
        "operationId": "",  # filled in below from method and path
        "x-tlog-roles": roles,
        "security": [{}, {"bearer": []}] if roles == [PUBLIC] else [{"bearer": []}],
        "responses": {str(status): ok, **{str(s): _error(s) for s in statuses}},
    }
    if description:
        op["description"] = description
    if params:
        op["parameters"] = params
    if body:
        op["requestBody"] = {"required": True, "content": {m: {"schema": body, **(example or {})} for m in media}}
    return op


def _path_param(name: str, schema: dict[str, Any], description: str, example: Any) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema, "description": description, "example": example}


def _query(name: str, schema: dict[str, Any], description: str, *, required: bool = False, example: Any = None) -> dict[str, Any]:
    p = {"name": name, "in": "query", "required": required, "schema": schema, "description": description}
    if example is not None:
        p["example"] = example
    return p


_SPEC_EXAMPLE = {  # SPEC §2.1
    "event_id": "recs-2026-08-01-000123", "content_id": "sc:track:123", "artist_id": "sc:user:42",
    "purpose": "recommendation", "phase": "inference",
    "system": {"id": "recs-ranker", "model": "ranker", "version": "2026.07.3"},
    "occurred_at": "2026-08-01T12:00:00Z", "invocations": 1, "detail": "daily candidate scoring", "basis": None,
}
_INDEX = {"type": "integer", "minimum": 0, "maximum": MAX_INT64 - 1}  # below a size, and sizes are int64
_SIZE = {"type": "integer", "minimum": 1, "maximum": MAX_INT64}
_INDEX_PARAM = _path_param("index", _INDEX, "a leaf index (decimal)", 0)
_ARTIST_PARAM = _path_param("artist_id", _PLATFORM_ID, "the artist's platform id", "sc:user:42")
_TILE_PATH = {
    "type": "string",
    "pattern": "^(entries|[0-9]{1,2})/(x[0-9]{3}/){0,6}[0-9]{3}(\\.p/[0-9]{1,3})?$",
    "description": "the rest of a c2sp.org/tlog-tiles path, e.g. `0/x001/234`, `1/000.p/17`, `entries/000`: "
                   "clients send it with literal slashes (`/tile/0/x001/234`)",
}

PATHS: dict[str, dict[str, Any]] = {
    "/checkpoint": {"get": _op(
        "The latest signed checkpoint", [PUBLIC], _text("c2sp.org/tlog-checkpoint signed as a c2sp.org/signed-note"),
        description="With a witness policy, the latest checkpoint its quorum has cosigned (503 until there is one).")},
    "/tile/{path}": {"get": _op(
        "A hash tile or entry bundle (c2sp.org/tlog-tiles)", [PUBLIC],
        _text("raw hashes (32 bytes each) or an entry bundle (uint16 big-endian length-prefixed leaves)",
              "application/octet-stream"),
        (404,), params=[_path_param("path", _TILE_PATH, "the tile below /tile/", "0/000.p/1")],
        description="Every tile is immutable, partial ones too (a partial tile of a given width never changes), with "
                    "an ETag (304 to If-None-Match); entry bundles are gzipped for a client that accepts it (hash tiles "
                    "do not compress). Non-canonical paths and tiles beyond the latest signed size are 404.")},
    "/v1/log": {"get": _op("Origin, verifier keys, size, policy in force and its purposes, and the witnesses", [PUBLIC],
                           _json(_ref("LogInfo")))},
    "/v1/proof/inclusion": {"get": _op(
        "Inclusion proof of leaf `index` in the tree of `size` leaves", [PUBLIC], _json(_ref("InclusionProof")), (400,),
        params=[_query("index", _INDEX, "leaf index, below size", required=True, example=0),
                _query("size", _SIZE, "tree size, at most the published size (default: the published size)")])},
    "/v1/proof/consistency": {"get": _op(
        "Consistency proof from the tree of `old` leaves to the tree of `new` leaves", [PUBLIC],
        _json(_ref("ConsistencyProof")), (400,),
        params=[_query("old", _SIZE, "older tree size, at most new", required=True, example=1),
                _query("new", _SIZE, "newer tree size, at most the published size", required=True, example=1)])},
    "/v1/map/proof": {"get": _op(
        "The map proof of an artist tag at the map leaf ending a checkpoint (SPEC §2.3)", [PUBLIC],
        _json(_ref("MapProofAnswer")), (400, 404),
        params=[_query("tag", _HEX32, "an artist tag (64 lowercase hex digits)", required=True, example="00" * 32),
                _query("size", _SIZE, "the published or the latest checkpoint's size (default: the published one); "
                                      "any other size is 404")],
        description="Tags are public, so this reveals no artist id. Check it with the root of the map leaf at "
                    "size - 1, included in the signed checkpoint of that size.")},
    "/v1/leaves/{index}": {"get": _op(
        "A public leaf's exact bytes", [PUBLIC], _json(_ref("Leaf"), "the leaf, byte for byte"), (400, 404),
        params=[_INDEX_PARAM])},
    "/v1/stats": {"get": _op(
        "Leaves and uses by type × purpose × phase × decision, over a period of logged_at, in total and by day", [PUBLIC],
        _json(_ref("Stats")), (400,), params=[
            _query("since", _DATE_OR_TIME, "only leaves logged at or after this date (its first instant, UTC) or time"),
            _query("until", _DATE_OR_TIME, "only leaves logged before this date or time"),
            _query("purpose", _PURPOSE_CODE, "only uses and refusals of this purpose (of any published policy; "
                                             "an unknown one is 400, naming the valid codes)"),
            _query("phase", _PHASE, "only uses and refusals in this phase"),
        ], description="Counted over the published checkpoint's leaves; everything counted is in the public leaves, "
                       "so anyone can recount it (`tlog verify --url` does). Unknown query parameters are 400.")},
    "/v1/export": {"get": _op(
        "The public leaves of a range, streamed as JSON Lines or CSV", [PUBLIC],
        {"description": "the leaves [start, X-Export-End): at most `tlog serve --max-export` (10,000) per request; "
                        "ask again from X-Export-End for more",
         "headers": {"X-Export-End": {"schema": {"type": "integer"}}},
         "content": {"application/x-ndjson": {"schema": {"type": "string", "description":
                                                         'one {"index", "leaf_hash", "leaf"} object a line'}},
                     "text/csv": {"schema": {"type": "string", "description":
                                             "a header line, then a leaf a line; columns: " + ", ".join(CSV_COLUMNS)}}}},
        (400,), params=[
            _query("start", _INDEX, "first leaf index (default 0)"),
            _query("end", _SIZE, "index to stop before, at most the published size (default: the published size)"),
            _query("format", {"enum": ["jsonl", "csv"]}, "jsonl (default) or csv"),
        ], description="Unknown query parameters are 400.")},
    "/v1/policies": {"get": _op("Every published policy version", [PUBLIC], _json({"type": "array", "items": _ref("PolicyRef")}))},
    "/v1/policies/{policy_id}": {"get": _op(
        "A policy document, byte for byte as its leaf commits to it", [PUBLIC], _json(_ref("PolicyDocument")), (404,),
        params=[_path_param("policy_id", {"type": "string", "minLength": 1}, "a policy id", "default")])},
    "/v1/policies/{a}/diff/{b}": {"get": _op(
        "What changed between two published policies, purpose by purpose, loosenings marked", [PUBLIC],
        _json(_ref("PolicyDiff")), (404,),
        params=[_path_param("a", {"type": "string", "minLength": 1}, "the older policy id", "default"),
                _path_param("b", {"type": "string", "minLength": 1}, "the newer policy id", "default")],
        description="404 names the policy id that is not published.")},
    "/feeds/policies.atom": {"get": _op(
        "Atom feed of the policy announcements, with their effective dates and what changed", [PUBLIC],
        _text("an Atom 1.0 feed (RFC 4287)", "application/atom+xml"))},
    "/feeds/artists/{artist_id}.atom": {"get": _op(
        "Atom feed of an artist's entries and of what each announced policy change means for its music", [PUBLIC],
        _text("an Atom 1.0 feed (RFC 4287); `next` links to older entries", "application/atom+xml"), (400, 404),
        params=[_ARTIST_PARAM,
                _query("key", {"type": "string", "minLength": 1, "maxLength": 256},
                       "a feed key of this artist (POST /v1/artists/{artist_id}/feed-keys)", required=True),
                _query("before", _SIZE, "older entries: the `before` of the feed's `next` link")],
        description="For the holder of the artist's feed key (no bearer token: feed readers cannot send one). A wrong, "
                    "revoked or another artist's key is 404, as for an artist that does not exist.")},
    "/healthz": {"get": _op("Liveness", [PUBLIC], _json(_ref("Health")))},
    "/metrics": {"get": _op("Prometheus text metrics, labelled by route template and role", [PUBLIC],
                            _text("Prometheus text exposition format"))},
    "/openapi.json": {"get": _op("This document", [PUBLIC], _json({"type": "object"}))},
    "/v1/uses": {"post": _op(
        "Log AI uses", [SERVICE], _json(_ref("UseResults"), "durable: committed under a signed checkpoint"), (403, 409),
        body={"oneOf": [_ref("UseRecord"), _ref("UseBatch")]},
        example={"examples": {"one": {"value": _SPEC_EXAMPLE}, "batch": {"value": {"records": [_SPEC_EXAMPLE]}}}},
        description="One record or {\"records\": [...]}, all or nothing. The same event_id again from the same "
                    "service returns the first answer (duplicate: true); a different body under it is 409.")},
    "/v1/receipts/{index}": {"get": _op(
        "A c2sp.org/tlog-proof receipt for a leaf against the published checkpoint", [SERVICE, ARTIST, AUDITOR],
        _text("c2sp.org/tlog-proof@v1"), (400, 403, 404, 425), params=[_INDEX_PARAM],
        description="For the service that logged the leaf, the artist it concerns, or an auditor. With a witness "
                    "policy, the checkpoint is the latest its quorum cosigned: 425 until one covers the leaf.")},
    "/v1/artists/{artist_id}/preferences": {
        "get": _op("An artist's current preferences", [SERVICE, ARTIST, AUDITOR], _json(_ref("ArtistPreferences")),
                   (400, 403), params=[_ARTIST_PARAM],
                   description="An artist token may read only its own (403 for any other id, existing or not)."),
        "put": _op("Replace an artist's preferences (appends a preference leaf)", [SERVICE, ARTIST],
                   _json(_ref("PreferencesSet")), (403,), params=[_ARTIST_PARAM], body=_ref("Preferences"),
                   description="A service may only add restrictions (403 otherwise); only the artist's own token may "
                               "loosen them. The answer's `dropped` lists the settings the new document no longer "
                               "holds."),
        "patch": _op("Change part of an artist's preferences with an RFC 7396 merge patch (appends a preference leaf)",
                     [SERVICE, ARTIST], _json(_ref("PreferencesSet")), (403,), params=[_ARTIST_PARAM],
                     body=_ref("PreferencesPatch"), media=("application/merge-patch+json", "application/json"),
                     description="The patch applies to the preferences in force when the log takes it. Same rights as "
                                 "PUT: a service may only add restrictions."),
    },
    "/v1/artists/{artist_id}/feed-keys": {"post": _op(
        "Make a key for the artist's Atom feed", [ARTIST], _json(_ref("FeedKey")), (400, 403), params=[_ARTIST_PARAM],
        description="The artist's own token only. The key is shown once and stored as its SHA-256.")},
    "/v1/artists/{artist_id}/feed-keys/{key_id}": {"delete": _op(
        "Revoke one of the artist's feed keys: its feed is 404 from the next request on", [ARTIST],
        _json(_ref("FeedKeyRevoked")), (400, 403, 404),
        params=[_ARTIST_PARAM, _path_param("key_id", {"type": "integer", "minimum": 1, "maximum": MAX_INT64 - 1},
                                           "the key's id, as made", 1)])},
    "/v1/tokens": {"post": _op(
        "Mint a short-lived artist token (for the platform's own sign-in)", [SERVICE], _json(_ref("TokenIssued"), "created"),
        (403,), body=_ref("TokenRequest"), status=201,
        example={"example": {"artist_id": "sc:user:42", "ttl_s": 3600}},
        description="Needs a service token with the issuer right (`tlog token create --service NAME --issuer`). The "
                    "token acts for the artist ids named, and expires after ttl_s (at most a day): 401 after that.")},
    "/v1/artists/{artist_id}/uses": {"get": _op(
        "An artist's entries with their private details, in log order", [ARTIST, AUDITOR],
        {"description": "a page of entries; X-Next-Cursor names the next page when there is one",
         "headers": {"X-Next-Cursor": {"schema": {"type": "string"}}},
         "content": {"application/json": {"schema": _ref("EntryPage")},
                     "application/x-ndjson": {"schema": {"type": "string"}},
                     "text/csv": {"schema": {"type": "string"}}}},
        (400, 403), params=[
            _ARTIST_PARAM,
            _query("purpose", _PURPOSE_CODE, "only entries of this purpose (a code of one of the log's policies; "
                                             "another is 400, naming the valid codes)"),
            _query("phase", _PHASE, "only entries of this phase"),
            _query("content_id", _PLATFORM_ID, "only entries about this content"),
            _query("decision", _DECISION, "only entries with this decision"),
            _query("since", _DATE_OR_TIME, "only entries logged at or after"),
            _query("until", _DATE_OR_TIME, "only entries logged before"),
            _query("cursor", {"type": "string", "maxLength": 64}, "next_cursor of the previous page"),
            _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000},
                   "page size (default 100; the maximum is `tlog serve --max-page-size`)"),
            _query("format", {"enum": ["json", "jsonl", "csv"]}, "json (default), jsonl or csv"),
        ], description="An artist token may read only its own (403 for any other id, existing or not). Unknown "
                       "query parameters are 400.")},
    "/v1/artists/{artist_id}/audit": {"get": _op(
        "A self-contained audit bundle: checkpoint, entries with details, inclusion proofs, the artist chain",
        [ARTIST, AUDITOR], _json(_ref("AuditBundle")), (400, 403), params=[
            _ARTIST_PARAM,
            _query("size", {"type": "integer", "minimum": 1},
                   "a published checkpoint size (default: the published checkpoint); a walk passes its first page's"),
            _query("since", {"type": "integer", "minimum": 1},
                   "only entries at index ≥ since, with a consistency proof from since to size"),
            _query("from_aseq", {"type": "integer", "minimum": 1}, "the next_aseq of the previous page"),
            _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000},
                   "entries per page (default 1000; the maximum is `tlog serve --max-page-size`)"),
        ], description="An artist token may read only its own (403 for any other id, existing or not). The first "
                       "page (no from_aseq) at the published size carries the map proof that shows completeness. "
                       "Unknown query parameters are 400.")},
    "/v1/artists/{artist_id}/summary": {"get": _op(
        "An artist's counts by purpose, decision, week and month, its tracks and latest entries: the artist page's "
        "first view", [ARTIST, AUDITOR], _json(_obj({
            "artist_id": {"type": "string"}, "size": _SIZE, "entries": {"type": "integer"},
            "head": _nullable(_obj({"aseq": {"type": "integer"}, "index": _INDEX})),
            "uses": _obj({"leaves": {"type": "integer"}, "invocations": {"type": "integer"}}),
            "by_purpose": {"type": "array", "items": {"type": "object"}},
            "by_week": {"type": "array", "items": {"type": "object"}},
            "by_month": {"type": "array", "items": {"type": "object"}},
            "tracks": {"type": "array", "items": {"type": "object"}}, "track_count": {"type": "integer"},
            "latest": {"type": "array", "items": _ref("Entry")}, "preferences": {"type": "object"},
            "preference_changes": {"type": "integer"},
            "erased": {"type": "integer", "description": "entries erased on request (counted by their public leaves)"}})),
        (400, 403), params=[_ARTIST_PARAM],
        description="The entries under the published checkpoint, as the audit bundle at that checkpoint proves them.")},
    "/v1/whoami": {"get": _op(
        "Whom the bearer token speaks for", [SERVICE, ARTIST, AUDITOR],
        _json(_obj({"role": {"enum": ["service", "artist", "auditor"]}, "artist_id": _nullable({"type": "string"}),
                    "artist_ids": {"type": "array", "items": {"type": "string"}},
                    "expires_at": _nullable(_LOGGED_AT)})),
        description="The artist page is given a token only (by a sign-in link); this names its artist (the first, "
                    "for a token covering several: `artist_ids`).")},
    "/": {"get": _op("The public transparency page (HTML)", [PUBLIC], _text("the page", "text/html"))},
    "/artist": {"get": _op("The artist page (HTML); it asks for the artist's token and keeps it in the tab's "
                           "session storage", [PUBLIC], _text("the page", "text/html"))},
    "/static/{name}": {"get": _op(
        "The pages' scripts, stylesheet and icon, named by the hash of their content (immutable)", [PUBLIC],
        {"description": "the asset", "content": {m: {"schema": {"type": "string"}} for m in
                                                 ("text/javascript", "text/css", "image/svg+xml")}},
        (404,), params=[_path_param("name", {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,128}$"},
                                    "an asset's hashed file name, as the pages link it", "site.css")])},
    "/v1/content/{content_id}/artists": {"put": _op(
        "Bind a content to its artists (appends binding leaves)", [SERVICE], _json(_ref("ContentArtists")), (403,),
        params=[_path_param("content_id", _PLATFORM_ID, "the content's platform id", "sc:track:123")],
        body=_ref("ContentArtistsBody"),
        example={"examples": {"co-owned": {"value": {"artists": ["sc:user:42", "sc:user:77"]}}}},
        description="Needs a service token with the catalog right (`tlog token create --service NAME --catalog`; "
                    "403 without). Each artist bound or released gets a `binding` leaf in its chain. A use must "
                    "then name one of the content's artists (409 otherwise), once per rightsholder; content no "
                    "one bound is bound to the artist its first use names.")},
    "/v1/entries/{index}": {"get": _op(
        "One entry's private details and its leaf", [AUDITOR], _json(_ref("EntryWithLeaf")), (400, 403, 404),
        params=[_INDEX_PARAM])},
}

for _path, _ops in PATHS.items():
    for _method, _o in _ops.items():
        _o["operationId"] = _method + "".join(
            part.replace("{", "").replace("}", "").replace(".", "_").replace("_", " ").title().replace(" ", "")
            for part in _path.split("/") if part)

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "tlog",
        "version": __version__,
        "summary": "A verifiable log of every AI use of artists' content",
        "description": "Errors are JSON {\"error\": {\"code\", \"message\", \"details\"}}; a rejected request changes "
                       "nothing; a 5xx never follows from bad input. A request with a token that is not valid gets 401 "
                       "on every route, public ones included.",
        "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
    },
    "servers": [{"url": "/"}],
    "components": {
        "schemas": SCHEMAS,
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                       "description": "a token from `tlog token create` (role service, artist or auditor)"}},
    },
    "paths": PATHS,
}

_BODY = orjson.dumps(DOCUMENT)


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=_BODY, content_type="application/json", headers={"Cache-Control": "public, max-age=300"})
