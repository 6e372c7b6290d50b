"""Model names and NAME:VERSION references: what is accepted is exactly the documented alphabet, whole."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lepton_ai.errors import InvalidInputError
from lepton_ai.store.refs import check_name, parse_ref

ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"
names = st.builds(
    lambda first, rest: first + rest, st.sampled_from(ALPHABET[:62]), st.text(ALPHABET, max_size=127)
)


@pytest.mark.parametrize("bad", ["digits\n", "digits\r\n", "\ndigits", "dig\nits", "digits ", ""])
def test_a_name_with_anything_around_it_is_refused(bad: str) -> None:
    with pytest.raises(InvalidInputError, match="invalid model name"):
        check_name(bad)
    with pytest.raises(InvalidInputError):
        parse_ref(f"{bad}:1")


@given(names, st.integers(min_value=1, max_value=999_999_999))
def test_a_valid_reference_reads_back_as_written(name: str, version: int) -> None:
    assert check_name(name) == name
    ref = parse_ref(f"{name}:{version}")
    assert (ref.name, ref.version, str(ref)) == (name, version, f"{name}:{version}")
    assert parse_ref(name).version is None and parse_ref(f"{name}:latest").version is None


@given(st.text(max_size=140))
def test_any_text_is_a_valid_name_or_a_clear_error(text: str) -> None:
    try:
        accepted = check_name(text)
    except InvalidInputError as e:
        assert "invalid model name" in str(e)
    else:
        assert accepted == text and 1 <= len(text) <= 128 and set(text) <= set(ALPHABET)
