"""tlog/server/params.py: one spelling per number, within int64, and the parameter named when refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tlog.errors import ValidationError
from tlog.server.params import INT64_MAX, MAX_INDEX, decimal, parse_decimal, platform_id


@given(st.integers(0, 2**70))
def test_a_number_written_plainly_reads_back_while_it_fits_int64(value: int) -> None:
    assert parse_decimal(str(value)) == (value if value <= INT64_MAX else None)


@given(st.text(max_size=25))
def test_whatever_is_accepted_is_the_one_spelling_of_its_value(raw: str) -> None:
    value = parse_decimal(raw)
    assert value is None or (str(value) == raw and 0 <= value <= INT64_MAX)


@given(st.integers(0, INT64_MAX), st.sampled_from(["0", "00", "+", "-", " ", "\t", "٠"]))
def test_a_sign_a_space_or_a_leading_zero_is_refused(value: int, prefix: str) -> None:
    assert parse_decimal(prefix + str(value)) is None


@given(st.integers(0, INT64_MAX), st.sampled_from([" ", "\n", ".0", "e0", "٠", "_0"]))
def test_anything_after_the_digits_is_refused(value: int, suffix: str) -> None:
    assert parse_decimal(str(value) + suffix) is None


@pytest.mark.parametrize("raw", ["", "-0", "+0", "00", "007", "1e3", "0x1", "1_000", "²", "١", "9223372036854775808",
                                 "99999999999999999999", " 1", "1 "])
def test_refusals_name_the_parameter(raw: str) -> None:
    with pytest.raises(ValidationError) as info:
        decimal(raw, "size")
    assert info.value.details[0]["field"] == "size" and "size" in info.value.message


def test_bounds_name_the_parameter_and_the_bound() -> None:
    assert decimal("0", "start") == 0 and decimal(str(INT64_MAX), "end") == INT64_MAX
    assert decimal(str(MAX_INDEX), "index", maximum=MAX_INDEX) == MAX_INDEX
    for raw, kw, bound in (("0", {"minimum": 1}, "at least 1"), (str(INT64_MAX), {"maximum": MAX_INDEX}, f"at most {MAX_INDEX}")):
        with pytest.raises(ValidationError, match=bound) as info:
            decimal(raw, "limit", **kw)
        assert info.value.details[0]["field"] == "limit"


def test_a_path_id_must_be_a_platform_id() -> None:
    assert platform_id("sc:user:1", "artist_id") == "sc:user:1"
    with pytest.raises(ValidationError) as info:
        platform_id("a b", "content_id")
    assert info.value.details[0]["field"] == "content_id"
