"""The one backoff schedule and Retry-After reading (tlog/backoff.py): bounded, growing, jittered within
its bounds, a server's Retry-After a floor."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from tlog.backoff import Backoff, parse_retry_after

bases = st.floats(min_value=0.001, max_value=10.0)
caps = st.floats(min_value=0.01, max_value=600.0)
jitters = st.floats(min_value=0.0, max_value=1.0)
attempts = st.integers(min_value=0, max_value=80)


def _backoff(base: float, cap: float, jitter: float, seed: int) -> Backoff:
    return Backoff(base=base, cap=cap, jitter=jitter, rng=random.Random(seed))


@given(bases, caps, jitters, attempts, st.integers())
def test_every_delay_is_within_the_jitter_of_its_step_and_never_beyond_the_cap(base, cap, jitter, n, seed):
    b = _backoff(base, cap, jitter, seed)
    for _ in range(n):
        step = b.step()
        delay = b.next_delay()
        assert (1 - jitter) * step - 1e-9 <= delay <= step <= cap


@given(bases, caps, jitters, attempts, st.integers())
def test_the_step_doubles_until_it_reaches_the_cap_then_stays(base, cap, jitter, n, seed):
    b = _backoff(base, cap, jitter, seed)
    steps = []
    for _ in range(n):
        steps.append(b.step())
        b.next_delay()
    for a, c in zip(steps, steps[1:]):
        assert c == cap if a * 2 >= cap else c == a * 2


@given(bases, caps, jitters, attempts, st.floats(min_value=0, max_value=1e9), st.integers())
def test_a_retry_after_is_a_floor_capped_like_any_delay(base, cap, jitter, n, retry_after, seed):
    b = _backoff(base, cap, jitter, seed)
    for _ in range(n):
        b.next_delay()
    delay = b.next_delay(retry_after)
    assert min(retry_after, cap) <= delay <= cap


def test_full_jitter_spreads_clients_that_failed_together():
    delays = [Backoff(base=0.1, cap=1.0).next_delay() for _ in range(200)]
    assert len(set(delays)) > 150 and min(delays) < 0.05 < max(delays)  # not in lockstep
    no_jitter = Backoff(base=1.0, cap=30.0, jitter=0.0)
    assert [no_jitter.next_delay() for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]  # the witness publisher's


def test_reset_starts_the_schedule_over():
    b = Backoff(base=1.0, cap=30.0, jitter=0.0)
    for _ in range(4):
        b.next_delay()
    b.reset()
    assert b.next_delay() == 1.0


def test_retry_after_is_read_as_seconds_or_not_at_all():
    assert parse_retry_after("7") == 7.0 and parse_retry_after(" 2 ") == 2.0 and parse_retry_after("0.5") == 0.5
    assert parse_retry_after("-3") == 0.0  # "now"
    for unusable in (None, "", "soon", "Wed, 21 Oct 2015 07:28:00 GMT", "inf", "nan"):
        assert parse_retry_after(unusable) is None, unusable


@given(st.text(max_size=20))
def test_any_header_reads_as_none_or_a_finite_non_negative_number(text):
    seconds = parse_retry_after(text)
    assert seconds is None or 0 <= seconds < float("inf")
