"""schemathesis against a real `tlog serve`, driven by the OpenAPI document the server publishes.

Every operation gets schemathesis' examples, coverage (boundary and schema-violating values) and fuzzing
cases, positive and negative; each case is sent once with each role's token. Whatever the input:

- no 5xx, and no traceback (nor any token) in the server's output;
- every answer is documented: status, content type and body schema (errors included);
- data the schema forbids is refused with a 4xx (the schema is never looser than it says);
- a write that is refused changes nothing: the signed checkpoint (and so the log size) is the same after;
- no answer is larger than a fixed multiple of its request plus a bound: an error's (a cut message and
  a bounded list of details), or a success's (a page of this small log, or a static asset).

The suite runs a bounded campaign (TLOG_FUZZ_EXAMPLES fuzzing cases per operation, 8 by default);
`scripts/fuzz` runs a long one through this same file and prints the counts from TLOG_FUZZ_REPORT."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import CheckContext, not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tlog.server import openapi

from .roles import start_env

EXAMPLES = int(os.environ.get("TLOG_FUZZ_EXAMPLES", "8"))
SEED = int(os.environ.get("TLOG_FUZZ_SEED", "20260801"))  # fixed in CI: a failure there replays
FUZZ_ROLES = ("none", "service", "artist_a", "auditor")
WRITES = {"POST /v1/uses", "PUT /v1/artists/{artist_id}/preferences", "PATCH /v1/artists/{artist_id}/preferences",
          "POST /v1/tokens"}
SIZE_FACTOR = 2
ERROR_BUDGET = 16 << 10  # an error body: a message cut to 1000 characters, 20 details of 2 × 200, one count
PAGE_BUDGET = 256 << 10  # a success: the largest page of the fuzzed log (40 records), or a static asset


@schemathesis.check
def bounded_response_size(ctx: CheckContext, response: schemathesis.Response, case: schemathesis.Case) -> bool:
    """Issue 15: no answer is larger than a fixed multiple of its request plus a bound."""
    sent = len(response.request.url or "") + len(response.request.body or b"")
    error = response.status_code >= 400
    budget = ERROR_BUDGET if error else PAGE_BUDGET
    largest = "largest_error" if error else "largest_success"
    TALLY[largest] = max(TALLY[largest], response.content_size)
    assert response.content_size <= SIZE_FACTOR * sent + budget, (
        f"{case.method} {case.formatted_path}: {response.content_size} bytes answered to {sent} sent")
    return True


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance, negative_data_rejection, bounded_response_size]

schema = schemathesis.openapi.from_dict(openapi.DOCUMENT)
schema.config.seed = SEED
TALLY: Counter[str] = Counter()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    env = start_env(tmp_path_factory.mktemp("fuzz"), "--rate", "0", "--auth-fail-rate", "0")  # limits: test_access
    started = time.monotonic()
    yield env
    out = env.stop()
    TALLY["seconds"] = round(time.monotonic() - started)
    report = os.environ.get("TLOG_FUZZ_REPORT")
    if report:
        Path(report).write_text(json.dumps({**TALLY, "tracebacks": out.count("Traceback")}))
    assert "Traceback" not in out, out[-5000:]
    for token in env.tokens.values():
        assert not token or token not in out


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_api(case, env):
    write = case.operation.label in WRITES
    for role in FUZZ_ROLES:
        headers = env.headers(role)
        before = env.state() if write else None
        response = case.call(base_url=env.url, headers=headers, timeout=30)
        status = response.status_code
        TALLY["cases"] += 1
        TALLY[f"{status // 100}xx"] += 1
        assert status < 500, f"{case.method} {case.formatted_path} as {role}: {status} {response.text[:500]}"
        case.validate_response(response, checks=CHECKS, headers=headers)
        if write and 400 <= status < 500:
            TALLY["refused_writes"] += 1
            assert env.state() == before, f"a refused {case.operation.label} ({status}) changed the log"


def test_campaign_size():
    """Runs after the campaign above (same module, file order): it really tried a few hundred cases."""
    if not TALLY["cases"]:
        pytest.skip("the campaign did not run (deselected)")
    assert TALLY["cases"] >= 300, TALLY
    assert TALLY["4xx"] > 0 and TALLY["2xx"] > 0 and TALLY["refused_writes"] > 0, TALLY
    assert TALLY["5xx"] == 0
