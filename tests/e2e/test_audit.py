"""`tlog audit`: an artist fetches its bundle, verifies it online and offline, and any change is caught."""

from __future__ import annotations

import base64
import copy

import orjson
import pytest
from click.testing import CliRunner

from tlog.audit import verify_bundle
from tlog.cli import main
from tlog.errors import TlogError
from tlog.note import Verifier

from .conftest import start_server, stop_server
from .test_service_api import make_token


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    from tlog.demo import build_demo

    d = tmp_path_factory.mktemp("audit")
    db = d / "tlog.db"
    build_demo(str(db), 400)
    token = make_token(db, "--artist", "sc:user:2")
    other = make_token(db, "--artist", "sc:user:3")
    server = start_server(db)
    import urllib.request

    vkey = orjson.loads(urllib.request.urlopen(server.url + "/v1/log").read())["verifier_keys"][0]
    yield server, vkey, token, other, d
    stop_server(server)


def test_fetch_verify_and_save(audited):
    server, vkey, token, _, d = audited
    out = d / "bundle.json"
    res = CliRunner().invoke(main, ["audit", "--url", server.url, "--vkey", vkey, "--artist", "sc:user:2",
                                    "--token", token, "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert res.output.startswith("ok: ") and "chain contiguous" in res.output
    offline = CliRunner().invoke(main, ["audit", "verify", str(out), "--vkey", vkey])
    assert offline.exit_code == 0 and offline.output == res.output
    bundle = orjson.loads(out.read_bytes())
    assert bundle["entries"] and all(e["details"]["artist_id"] == "sc:user:2" for e in bundle["entries"])
    # sc:user:2 is strict with a fraud_detection opt-in: refusals are logged and visible to the artist.
    assert "refused" in res.output


def test_wrong_key_wrong_artist_and_bad_token_fail(audited):
    server, vkey, token, other, d = audited
    from tlog.note import generate_key

    _, wrong = generate_key("demo.tlog.example/log")
    r = CliRunner().invoke(main, ["audit", "--url", server.url, "--vkey", wrong, "--artist", "sc:user:2", "--token", token])
    assert r.exit_code == 1 and "does not verify" in r.output
    r = CliRunner().invoke(main, ["audit", "--url", server.url, "--vkey", vkey, "--artist", "sc:user:2", "--token", other])
    assert r.exit_code == 1 and "403" in r.output
    r = CliRunner().invoke(main, ["audit", "--url", server.url, "--vkey", vkey, "--artist", "sc:user:2"])
    assert r.exit_code == 1 and "--token" in r.output


def _mutations(bundle):
    """Changes a malicious or broken server could make; each must be caught."""
    def drop_middle(b):
        del b["entries"][len(b["entries"]) // 2]

    def swap(b):
        b["entries"][0], b["entries"][1] = b["entries"][1], b["entries"][0]

    def details(b):
        b["entries"][1]["details"]["purpose"] = "model_training_generative"

    def detail_text(b):
        b["entries"][0]["details"]["detail"] = "nothing to see"

    def proof(b):
        h = bytearray(base64.b64decode(b["entries"][2]["proof"][0]))
        h[0] ^= 1
        b["entries"][2]["proof"][0] = base64.b64encode(bytes(h)).decode()

    def leaf_bit(b):
        leaf = bytearray(base64.b64decode(b["entries"][3]["leaf"]))
        leaf[-5] ^= 1
        b["entries"][3]["leaf"] = base64.b64encode(bytes(leaf)).decode()

    def checkpoint(b):
        b["checkpoint"] = b["checkpoint"].replace("\n\n", "\n\nx", 1)

    def head(b):
        b["head"]["aseq"] += 1

    def index(b):
        b["entries"][0]["index"] += 1

    def tag(b):
        b["tag"] = "00" * 32

    return [drop_middle, swap, details, detail_text, proof, leaf_bit, checkpoint, head, index, tag]


def test_every_tampering_is_caught(audited):
    import urllib.request

    server, vkey, token, _, d = audited
    req = urllib.request.Request(server.url + "/v1/artists/sc:user:2/audit", headers={"Authorization": f"Bearer {token}"})
    bundle = orjson.loads(urllib.request.urlopen(req).read())
    verifier = Verifier.from_key(vkey)
    assert verify_bundle(bundle, verifier).entries == len(bundle["entries"])
    for mutate in _mutations(bundle):
        b = copy.deepcopy(bundle)
        mutate(b)
        with pytest.raises(TlogError):
            verify_bundle(b, verifier)
