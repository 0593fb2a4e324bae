"""The audit bundle verifier (tlog/audit.py) against bundles of a real local log, served in process by the
real route; then each attack a log could make on an artist, crafted on those bundles, and the reason
the verifier gives for refusing it."""

from __future__ import annotations

import asyncio
import base64
import copy
import time
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from tlog.audit import AuditState, Head, verify_bundle, verify_walk
from tlog.canonical import canonical
from tlog.errors import ValidationError, VerificationError
from tlog.log import init_log, open_log
from tlog.note import ALG_COSIGNATURE_V1, Signer, generate_key
from tlog.policy import DEFAULT_POLICY, Purpose, make_policy
from tlog.server.app import make_app
from tlog.tokens import new_token
from tlog.witness.quorum import parse_witness_quorum

from .conftest import append, records

A, B, C, NOBODY = "sc:user:1", "sc:user:2", "sc:user:3", "sc:user:never-logged"
ORIGIN = "audit.tlog.example/log"


class Served:
    """A log on disk behind the real app, in process on its own event loop, read as an auditor."""

    def __init__(self, db: Path) -> None:
        self.reader = open_log(db)
        self.writer = open_log(db, secrets_needed=True)
        self.verifier = self.reader.verifier
        self.tokens = {}
        for role, subject in (("auditor", None), ("service", "recsys")):
            token, digest = new_token()
            self.reader.store.add_token(role, subject, digest, int(time.time() * 1000))
            self.tokens[role] = token
        self.loop = asyncio.new_event_loop()
        self.client = TestClient(TestServer(make_app(self.reader, self.writer)), loop=self.loop)
        self.loop.run_until_complete(self.client.start_server())

    def get(self, path: str, role: str = "auditor", **params: int) -> tuple[int, Any]:
        async def go() -> tuple[int, Any]:
            async with self.client.get(path, params={k: str(v) for k, v in params.items()},
                                       headers={"Authorization": f"Bearer {self.tokens[role]}"}) as r:
                return r.status, orjson.loads(await r.read())

        return self.loop.run_until_complete(go())

    def bundle(self, artist: str, **params: int) -> dict[str, Any]:
        status, body = self.get(f"/v1/artists/{artist}/audit", **params)
        assert status == 200, body
        return body

    def walk(self, artist: str, limit: int, **params: int) -> list[dict[str, Any]]:
        pages = [self.bundle(artist, limit=limit, **params)]
        size = int(pages[0]["checkpoint"].split("\n")[1])
        while pages[-1]["next_aseq"] is not None:
            pages.append(self.bundle(artist, limit=limit, size=size, from_aseq=pages[-1]["next_aseq"], **params))
        return pages

    def use(self, artist: str, event_id: str, purpose: str = "recommendation") -> None:
        record = {"event_id": event_id, "content_id": f"sc:track:77-{artist}", "artist_id": artist, "purpose": purpose,
                  "phase": "inference", "system": {"id": "s", "model": "m", "version": "1"},
                  "occurred_at": "2026-08-01T12:00:00Z"}

        async def go() -> int:
            async with self.client.post("/v1/uses", json=record,
                                        headers={"Authorization": f"Bearer {self.tokens['service']}"}) as r:
                return r.status

        assert self.loop.run_until_complete(go()) == 200

    def close(self) -> None:
        self.loop.run_until_complete(self.client.close())
        self.loop.close()
        self.reader.close()
        self.writer.close()


def _stricter_policy() -> bytes:
    """The default policy with recommendations flagged: uses after it are decided otherwise."""
    purposes = [Purpose(p.code, p.covers, p.category, "flagged" if p.code == "recommendation" else p.default,
                        p.override_eligible) for p in DEFAULT_POLICY.purposes.values()]
    return make_policy("2026-12", purposes, DEFAULT_POLICY.text).document


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[Served]:
    """Three artists under two policies; A changes its preferences twice along the way."""
    db = tmp_path_factory.mktemp("audit") / "tlog.db"
    log = init_log(db, ORIGIN)
    seq = log.sequencer()
    seq.set_preferences(A, {"purposes": {"recommendation": "deny"}}, by="artist")
    append(seq, records(30, seed=1, artists=3))
    seq.set_preferences(A, {"no_ai": True}, by="artist")
    seq.publish_policy(_stricter_policy(), "2026-12")
    append(seq, records(30, seed=2, artists=3))
    seq.close()
    log.close()
    s = Served(db)
    yield s
    s.close()


def _entry_count(bundle: dict[str, Any]) -> int:
    return len(bundle["entries"])


def _in_force(entry: dict[str, Any]) -> dict[str, Any]:
    """A preference entry of a bundle in the form of its preferences_in_force."""
    return {k: v for k, v in entry.items() if k != "erased"}


def test_a_full_history_verifies_complete(served: Served) -> None:
    bundle = served.bundle(A)
    report = verify_bundle(bundle, served.verifier)
    assert report.complete and report.entries == _entry_count(bundle) > 10
    assert report.preference_changes == 2 and len(bundle["policies"]) == 2
    assert {d for _, d in report.uses} >= {"refused", "allowed"}  # decided by both preference documents
    verdict = report.verdict()
    assert verdict.startswith(f"Complete at checkpoint {report.size:,} (") and "every decision follows" in verdict
    assert report.head == Head(len(bundle["entries"]), bundle["entries"][-1]["index"])


def test_an_artist_never_logged_gets_a_proof_of_absence(served: Served) -> None:
    bundle = served.bundle(NOBODY)
    assert bundle["entries"] == [] and bundle["map"]["map_proof"]["found"] is None
    report = verify_bundle(bundle, served.verifier)
    assert report.complete and report.verdict().startswith(f"No entries for this id ({NOBODY}) up to checkpoint")
    served_again = served.bundle(NOBODY)
    assert served_again["tag"] == bundle["tag"]  # one tag, computed again, nothing stored on read
    assert served.reader.store.artist_state(NOBODY) is None


def test_a_walk_over_three_pages(served: Served) -> None:
    count = _entry_count(served.bundle(B))
    pages = served.walk(B, limit=-(-count // 3))
    assert len(pages) == 3 and pages[0]["map"] is not None and pages[1]["map"] is None
    report = verify_walk(pages, served.verifier)
    assert report.complete and report.entries == count and report.pages == 3
    # Each page alone verifies, but does not show completeness.
    alone = verify_bundle(pages[1], served.verifier)
    assert not alone.complete and "cannot show that nothing was left out" in alone.verdict()
    # A walk missing its middle page, or its last, is refused or incomplete.
    with pytest.raises(VerificationError, match="does not follow entry"):
        verify_walk([pages[0], pages[2]], served.verifier)
    assert not verify_walk(pages[:2], served.verifier).complete


def test_pages_carry_the_preferences_in_force(served: Served) -> None:
    """Each page can re-derive its decisions alone: A's later pages start with its preferences in force."""
    pages = served.walk(A, limit=4)
    assert all(p["preferences_in_force"] is not None for p in pages[1:])
    verify_walk(pages, served.verifier)
    # The last page shown with A's first preferences in force instead of its second.
    bad = copy.deepcopy(pages)
    assert bad[-1]["preferences_in_force"]["index"] != bad[0]["entries"][0]["index"]
    bad[-1]["preferences_in_force"] = _in_force(bad[0]["entries"][0])
    with pytest.raises(VerificationError, match="the log decided|other preferences in force"):
        verify_walk(bad, served.verifier)


def test_since_fetches_only_what_is_new_and_proves_consistency(served: Served) -> None:
    first = verify_bundle(served.bundle(C), served.verifier)
    state = first.state()
    assert state is not None and state.head == first.head
    served.use(C, "since-1")
    served.use(C, "since-2")
    served.use(A, "since-other")
    bundle = served.bundle(C, since=state.size)
    assert _entry_count(bundle) == 2 and bundle["since"] == state.size and bundle["consistency"]
    report = verify_bundle(bundle, served.verifier, state=state)
    assert report.complete and report.extends == state.size and report.entries == 2
    assert "since checkpoint" in report.verdict() and "(your last check), 2 new uses" in report.verdict()
    new = report.state()
    assert new is not None and new.head == Head(state.head.aseq + 2, bundle["entries"][-1]["index"])
    # Nothing new since: the map shows the remembered head again.
    again = verify_bundle(served.bundle(C, since=new.size), served.verifier, state=new)
    assert again.complete and again.verdict().startswith(f"Nothing new about you since checkpoint {new.size:,}")
    # A consistency proof that does not lead from the remembered root is a rewritten history.
    forged = AuditState(state.origin, state.artist_id, state.size, bytes(32), state.checkpoint, state.head,
                        state.preference)
    with pytest.raises(VerificationError, match="does not extend checkpoint"):
        verify_bundle(bundle, served.verifier, state=forged)
    # A full bundle cannot move the state forward without proving consistency.
    with pytest.raises(ValidationError, match=f"since={state.size}"):
        verify_bundle(served.bundle(C), served.verifier, state=state)


def test_an_old_checkpoint_replayed_against_the_state_is_refused(served: Served) -> None:
    old = served.bundle(B)
    served.use(B, "replay-1")
    state = verify_bundle(served.bundle(B), served.verifier).state()
    assert state is not None and state.size > int(old["checkpoint"].split("\n")[1])
    with pytest.raises(VerificationError, match="an older checkpoint than one you already verified"):
        verify_bundle(old, served.verifier, state=state)


def test_a_since_bundle_must_continue_the_remembered_head(served: Served) -> None:
    state = verify_bundle(served.bundle(B), served.verifier).state()
    assert state is not None and state.head is not None
    served.use(B, "head-1")
    bundle = served.bundle(B, since=state.size)
    wrong = AuditState(state.origin, state.artist_id, state.size, state.root, state.checkpoint,
                       Head(state.head.aseq - 1, state.head.index), state.preference)
    with pytest.raises(VerificationError, match="does not follow your last verified entry"):
        verify_bundle(bundle, served.verifier, state=wrong)


# --- attacks --------------------------------------------------------------------------------------------


def _refused(bundle: Any, served: Served, match: str, **kw: Any) -> None:
    with pytest.raises(VerificationError, match=match):
        verify_bundle(bundle, served.verifier, **kw)


def test_last_entries_cut_off(served: Served) -> None:
    bundle = served.bundle(A)
    del bundle["entries"][-2:]
    _refused(bundle, served, r"bundle stops at number .*: 2 entries left out")


def test_every_entry_cut_off(served: Served) -> None:
    bundle = served.bundle(A)
    bundle["entries"] = []
    _refused(bundle, served, r"but the bundle lists none: entries were left out")


def test_a_middle_entry_missing(served: Served) -> None:
    bundle = served.bundle(A)
    del bundle["entries"][3]
    _refused(bundle, served, r"is your entry number 5, but the one before it in the bundle is number 3: 1 entry missing")


def test_the_first_entries_missing(served: Served) -> None:
    bundle = served.bundle(A)
    bundle["preferences_in_force"] = _in_force(bundle["entries"][0])  # so the page's decisions still hold
    del bundle["entries"][:2]
    _refused(bundle, served, r"starts at your entry number 3 .*: 2 entries before it left out")


def test_a_foreign_entry_added(served: Served) -> None:
    bundle, other = served.bundle(A), served.bundle(B)
    bundle["entries"].insert(2, other["entries"][1])
    _refused(bundle, served, r"is about someone else: its tag is not yours")


def test_an_entry_moved(served: Served) -> None:
    bundle = served.bundle(A)
    bundle["entries"][1]["index"] += 1
    _refused(bundle, served, r"entry .* is not in the log at checkpoint")


def test_the_tag_swapped(served: Served) -> None:
    """To hide A's history, a log shows A the tag of someone never logged, whose absence it can prove."""
    bundle, stranger = served.bundle(A), served.bundle(NOBODY)
    bundle.update(tag=stranger["tag"], map=stranger["map"], entries=[], preferences_in_force=None)
    _refused(bundle, served, r"the bundle's tag is not the tag of 'sc:user:1'")
    bundle["vrf"] = stranger["vrf"]
    _refused(bundle, served, r"the VRF proof of your tag does not verify")
    bundle = served.bundle(A)
    bundle["tag"] = served.bundle(B)["tag"]
    _refused(bundle, served, r"is about someone else")


def test_a_wrong_vrf_proof(served: Served) -> None:
    bundle = served.bundle(A)
    proof = bytearray(bytes.fromhex(bundle["vrf"]["proof"]))
    proof[40] ^= 1
    bundle["vrf"]["proof"] = proof.hex()
    _refused(bundle, served, r"the VRF proof of your tag does not verify")
    bundle = served.bundle(A)
    bundle["vrf"]["proof"] = served.bundle(B)["vrf"]["proof"]
    _refused(bundle, served, r"the VRF proof of your tag does not verify")


def test_another_vrf_key(served: Served) -> None:
    bundle = served.bundle(A)
    bundle["vrf"]["key"] = served.reader.vrf_key[::-1].hex()
    _refused(bundle, served, r"VRF key is not the one the log committed to")


def test_a_map_proof_that_does_not_lead_to_the_map_root(served: Served) -> None:
    bundle = served.bundle(A)
    proof = bundle["map"]["map_proof"]
    proof["siblings"][0] = ("0" if proof["siblings"][0][0] != "0" else "1") + proof["siblings"][0][1:]
    _refused(bundle, served, r"the map proof does not lead to the map root")
    bundle = served.bundle(A)
    bundle["map"]["map_proof"]["found"]["aseq"] -= 2  # claims two entries fewer, to hide the last two
    del bundle["entries"][-2:]
    _refused(bundle, served, r"the map proof does not lead to the map root")


def test_a_map_leaf_that_is_not_the_checkpoints_last(served: Served) -> None:
    bundle = served.bundle(A)
    bundle["map"]["index"] -= 1
    _refused(bundle, served, r"the map leaf must be the checkpoint's last leaf")


def test_a_policy_document_not_matching_its_leaf(served: Served) -> None:
    bundle = served.bundle(A)
    doc = orjson.loads(base64.b64decode(bundle["policies"][1]["document"]))
    doc["purposes"]["recommendation"]["default"] = "allowed"
    bundle["policies"][1]["document"] = base64.b64encode(canonical(doc)).decode()
    _refused(bundle, served, r"policy '2026-12' \(index .*\): the document shown is not the one its leaf commits to")


def test_a_policy_left_out(served: Served) -> None:
    bundle = served.bundle(A)
    del bundle["policies"][1]
    _refused(bundle, served, r"it names policy '2026-12', but policy 'default' was in effect")


def test_details_that_do_not_match_the_leaf(served: Served) -> None:
    bundle = served.bundle(A)
    bundle["entries"][2]["details"]["purpose"] = "model_training_generative"
    _refused(bundle, served, r"the details shown are not the ones its public leaf commits to")


def test_a_checkpoint_under_another_key(served: Served, tmp_path: Path) -> None:
    other = init_log(tmp_path / "other.db", ORIGIN)
    try:
        with pytest.raises(VerificationError, match="does not verify with the key you named"):
            verify_bundle(served.bundle(A), other.verifier)
    finally:
        other.close()


def test_a_version_1_bundle_is_refused_by_name(served: Served) -> None:
    with pytest.raises(ValidationError, match="version 1 audit bundle"):
        verify_bundle({"version": 1, "origin": ORIGIN, "artist_id": A, "tag": None, "checkpoint": "",
                       "entries": [], "head": {"aseq": 0, "index": None}}, served.verifier)


def test_a_decision_that_does_not_follow_from_policy_and_preferences(tmp_path: Path, monkeypatch) -> None:
    """A log whose sequencer decided wrongly, yet signed everything correctly: a no_ai artist's content
    'allowed' for generative training. Only re-deriving the decision catches it."""
    db = tmp_path / "tlog.db"
    log = init_log(db, ORIGIN)
    seq = log.sequencer()
    seq.set_preferences(A, {"no_ai": True}, by="artist")
    append(seq, records(4, seed=5, artists=1))
    monkeypatch.setattr("tlog.builder.decide", lambda *args: "allowed")
    append(seq, records(1, seed=6, artists=1, purpose="model_training_generative", phase="training"))
    monkeypatch.undo()
    seq.close()
    log.close()
    s = Served(db)
    try:
        bundle = s.bundle(A)
        assert bundle["entries"][-1]["details"]["decision"] == "allowed"
        with pytest.raises(VerificationError, match=r"the log decided 'allowed' for model_training_generative of "
                                                    r".* but policy 'default' with your preferences then in force "
                                                    r"gives 'refused'"):
            verify_bundle(bundle, s.verifier)
    finally:
        s.close()


def test_a_loosening_published_without_the_notice_promised(tmp_path: Path, monkeypatch) -> None:
    """SPEC §4 Notice, from the policies every bundle holds: a sequencer that skipped the check, yet signed
    everything correctly, published a loosening at once. Even an artist with nothing logged sees it."""
    db = tmp_path / "tlog.db"
    log = init_log(db, ORIGIN)
    loose = [Purpose(p.code, p.covers, p.category, "allowed" if p.code == "model_training_generative" else p.default,
                     p.override_eligible) for p in DEFAULT_POLICY.purposes.values()]
    monkeypatch.setattr("tlog.builder.notice_problem", lambda *args: None)
    index, _ = log.sequencer().publish_policy(make_policy("loose", loose, DEFAULT_POLICY.text).document, "loose")
    monkeypatch.undo()
    log.close()
    s = Served(db)
    try:
        with pytest.raises(VerificationError) as err:
            verify_bundle(s.bundle(NOBODY), s.verifier)
    finally:
        s.close()
    assert err.value.index == index == 3
    assert err.value.message.startswith("policy 'loose' (index 3) loosens 'default' — model_training_generative: "
                                        "refused → allowed — but takes effect at "), err.value.message


def test_the_state_round_trips_and_refuses_anything_else() -> None:
    state = AuditState(ORIGIN, A, 10, bytes(range(32)), "note", Head(3, 8), 2)
    assert AuditState.from_json(orjson.loads(orjson.dumps(state.to_json()))) == state
    for bad in ({**state.to_json(), "size": 0}, {**state.to_json(), "extra": 1}, [], {**state.to_json(), "root": "AB" * 32}):
        with pytest.raises(ValidationError, match="not a tlog audit state"):
            AuditState.from_json(bad)


def _cosigned(bundle: dict[str, Any], *signers: Signer) -> dict[str, Any]:
    """The bundle with cosignature lines added to its checkpoint, as a log with witnesses serves it."""
    text = bundle["checkpoint"].encode().partition(b"\n\n")[0] + b"\n"
    lines = b"".join(s.signature(text).line() for s in signers)
    return {**bundle, "checkpoint": bundle["checkpoint"] + lines.decode()}


def test_a_witness_policy_requires_its_quorum(served: Served) -> None:
    keys = [generate_key(f"witness{i}.example", ALG_COSIGNATURE_V1) for i in range(3)]
    signers = [Signer.from_key(k) for k, _ in keys]
    quorum = parse_witness_quorum("".join(f"witness w{i} {v}\n" for i, (_, v) in enumerate(keys)).encode()
                                  + b"group two 2 w0 w1 w2\nquorum two\n")
    bundle = served.bundle(A)
    report = verify_bundle(_cosigned(bundle, signers[0], signers[2]), served.verifier, quorum=quorum)
    assert report.cosigners == ["w0", "w2"] and report.verdict().endswith("Cosigned by w0, w2 (quorum two).")
    with pytest.raises(VerificationError, match=r"cosigned by w1 of your witness policy, short of its quorum 'two'"):
        verify_bundle(_cosigned(bundle, signers[1]), served.verifier, quorum=quorum)
    forged = _cosigned(bundle, signers[0], signers[1])
    forged["checkpoint"] = forged["checkpoint"][:-10] + ("A" if forged["checkpoint"][-10] != "A" else "B") + forged["checkpoint"][-9:]
    with pytest.raises(VerificationError, match="cosignature on the checkpoint does not verify"):
        verify_bundle(forged, served.verifier, quorum=quorum)
