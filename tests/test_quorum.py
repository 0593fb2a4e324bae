"""Witness quorum files (tlog/witness/quorum.py; c2sp.org/tlog-policy, "witness policy" to users): strict
parsing, quorums, what the log publishes of them and whose cosignatures count."""

from __future__ import annotations

import re

import pytest

from tlog.errors import ValidationError
from tlog.note import ALG_COSIGNATURE_V1, Signature, Signer, Verifier, generate_key
from tlog.witness.quorum import load_witness_quorum, parse_witness_quorum

WKEYS = [generate_key(f"witness.example/{n}", ALG_COSIGNATURE_V1) for n in ("x1", "x2", "x3", "y1", "y2", "y3")]
LOG_VKEY = generate_key("example.com/log")[1]


def quorum_text(*lines: str) -> bytes:
    return "\n".join(lines).encode() + b"\n"


def test_the_spec_example_policy() -> None:
    """c2sp.org/tlog-policy's two-level example, with keys filled in."""
    p = parse_witness_quorum(quorum_text(
        f"log {LOG_VKEY}",
        "",
        *(f"witness X{i} {WKEYS[i - 1][1]}" for i in (1, 2, 3)),
        "group X-witnesses 2 X1 X2 X3",
        "",
        *(f"witness Y{i} {WKEYS[i + 2][1]}" for i in (1, 2, 3)),
        "group Y-witnesses any Y1 Y2 Y3",
        "",
        "group X-and-Y all X-witnesses Y-witnesses",
        "quorum X-and-Y",
    ))
    assert [v.key for v in p.logs] == [LOG_VKEY] and p.quorum == "X-and-Y"
    assert p.satisfied({"X1", "X3", "Y2"})
    assert not p.satisfied({"X1", "Y1", "Y2", "Y3"})  # only one X
    assert not p.satisfied({"X1", "X2"})  # no Y
    assert not p.satisfied({"X-witnesses", "Y-witnesses"})  # group names are not cosigners


def test_syntax_details() -> None:
    p = parse_witness_quorum(
        f"  # a comment\n\t\nwitness\tw1  {WKEYS[0][1]}\thttps://w1.example/ \n  quorum w1  ".encode()
    )
    assert p.witnesses["w1"].url == "https://w1.example/" and p.satisfied({"w1"}) and not p.satisfied(set())
    assert parse_witness_quorum(b"quorum none\n").satisfied(set())
    assert parse_witness_quorum(quorum_text(f"witness a {WKEYS[0][1]}", f"witness b {WKEYS[1][1]}",
                                            "group g all a b", "quorum g")).groups["g"].threshold == 2


@pytest.mark.parametrize("lines,error", [
    ((), "no quorum"),
    (("quorum none", "quorum none"), "exactly one quorum"),
    (("quorum w1",), "not a witness or group"),
    (("frobnicate x",), "unknown keyword"),
    ((f"witness w1 {WKEYS[0][1]}", "group g 0 w1", "quorum g"), "threshold"),
    ((f"witness w1 {WKEYS[0][1]}", "group g 2 w1", "quorum g"), "threshold"),
    ((f"witness w1 {WKEYS[0][1]}", "group g 01 w1", "quorum g"), "threshold"),
    ((f"witness w1 {WKEYS[0][1]}", "group g any w1 w1", "quorum g"), "twice"),
    ((f"witness w1 {WKEYS[0][1]}", "group g any w1 none", "quorum g"), "member 'none'"),
    (("group g any later", "quorum g"), "defined earlier"),
    ((f"witness w1 {WKEYS[0][1]}", "group g any", "quorum g"), "at least one member"),
    ((f"witness none {WKEYS[0][1]}",), "predefined"),
    ((f"witness w1 {WKEYS[0][1]}", f"witness w1 {WKEYS[1][1]}"), "already defined"),
    ((f"witness w1 {WKEYS[0][1]}", f"witness w2 {WKEYS[0][1]}"), "already listed"),
    ((f"witness w1 {LOG_VKEY}",), "not a cosignature/v1 key"),
    ((f"log {WKEYS[0][1]}",), "witness key"),
    ((f"log {LOG_VKEY}", f"log {LOG_VKEY}"), "already listed"),
    ((f"witness w1 {WKEYS[0][1]} ftp://x",), "http"),
    ((f"witness w1 {WKEYS[0][1]} https://x extra",), "takes 2 or 3 items"),
    (("witness w1 not-a-key",), "line 1"),
])
def test_bad_policies_name_the_problem(lines: tuple[str, ...], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        parse_witness_quorum(quorum_text(*lines))


def test_control_characters_are_refused_but_high_bytes_are_opaque() -> None:
    with pytest.raises(ValidationError, match="control character 0x0d"):
        parse_witness_quorum(b"quorum none\r\n")
    p = parse_witness_quorum(b"witness K " + WKEYS[0][1].encode() + b"\nwitness \xe2\x84\xaa " + WKEYS[1][1].encode()
                             + b"\ngroup g all K \xe2\x84\xaa\nquorum g\n")
    assert len(p.witnesses) == 2  # "K" and the Kelvin sign are different names


def test_a_policy_must_fit_the_log() -> None:
    ours = generate_key("example.com/log")[1]
    p = parse_witness_quorum(quorum_text(f"log {LOG_VKEY}", "quorum none"))
    with pytest.raises(ValidationError, match="none of this log's keys"):
        p.check_for_log([ours])
    p = parse_witness_quorum(quorum_text(f"witness w1 {WKEYS[0][1]}", "quorum w1"))
    with pytest.raises(ValidationError, match="no URL"):
        p.check_for_log([ours])


def test_what_the_log_publishes_of_its_policy_and_whose_cosignatures_count() -> None:
    """`as_json` (GET /v1/log) names the witnesses, their keys, the groups and the quorum, not the URLs;
    `cosigners` (the public page) keeps the policy's witnesses whose cosignature verifies, with its time."""
    p = parse_witness_quorum(quorum_text(
        *(f"witness x{i} {WKEYS[i - 1][1]} http://x{i}.internal" for i in (1, 2, 3)),
        "group two 2 x1 x2 x3", "quorum two"))
    assert p.as_json() == {"quorum": "two", "witnesses": [{"name": f"x{i}", "key": WKEYS[i - 1][1]} for i in (1, 2, 3)],
                           "groups": [{"name": "two", "threshold": 2, "members": ["x1", "x2", "x3"]}]}
    text = b"example.com/log\n1\n" + b"A" * 43 + b"=\n"
    log_line = Signer.from_key(generate_key("example.com/log")[0]).signature(text).line()
    x1, x3 = (Signer.from_key(WKEYS[i][0]).signature(text) for i in (0, 2))
    spoiled = Signature(x1.name, x1.key_hash, x1.sig[:-1] + bytes([x1.sig[-1] ^ 1])).line()
    stranger = Signer.from_key(WKEYS[4][0]).signature(text).line()
    note = text + b"\n" + log_line + x3.line() + spoiled + stranger
    assert p.cosigners(note) == {"x3": int.from_bytes(x3.sig[:8], "big")}
    assert p.cosigners(text + b"\n" + log_line + x3.line() + x1.line()) == {"x1": int.from_bytes(x1.sig[:8], "big"),
                                                                          "x3": int.from_bytes(x3.sig[:8], "big")}


def test_a_verifier_refuses_a_file_that_lists_other_logs_only(tmp_path) -> None:
    """`tlog audit` and `tlog monitor` check the cosignatures of one log: a file listing logs must list it."""
    path = tmp_path / "witnesses.policy"
    path.write_bytes(quorum_text(f"log {LOG_VKEY}", f"witness w1 {WKEYS[0][1]}", "quorum w1"))
    assert load_witness_quorum(path, Verifier.from_key(LOG_VKEY)).quorum == "w1"
    other = Verifier.from_key(generate_key("other.example/log")[1])
    with pytest.raises(ValidationError, match=re.escape(f"lists logs, but not the key {other.key}")):
        load_witness_quorum(path, other)
    with pytest.raises(ValidationError, match="cannot read the witness policy"):
        load_witness_quorum(tmp_path / "missing.policy")
