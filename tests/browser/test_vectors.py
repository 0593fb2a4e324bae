"""The in-browser verifiers (tlog/web/static) against the shared vectors, in a real Chromium: the same
vectors the Python verifiers pass (decisions, artist-map roots and proofs, ECVRF valid and invalid cases,
RFC 6962 proofs, signed notes)."""

from __future__ import annotations

from .conftest import console_errors, wait_for


def test_js_verifiers_pass_the_shared_vectors(browser, vectors_server):
    browser.get(vectors_server.url + "/")
    result = wait_for(browser, "window.__vectors", timeout=60)
    assert result["failed"] == [], result["failed"][:20]
    counts = result["counts"]
    assert counts["decisions"] == 484
    assert counts["ecvrf valid"] == 5 and counts["ecvrf invalid"] == 6
    assert counts["map proofs"] == 9 and counts["map invalid_proofs"] == 8 and counts["map roots"] == 3
    assert counts["rfc6962"] >= 100
    assert console_errors(browser) == []
