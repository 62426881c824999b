"""Metadata limits (domain/metadata.py): each refusal names the limit and what to do."""

from __future__ import annotations

import pytest

from domain.metadata import MAX_KEY_LENGTH, MAX_KEYS, MAX_VALUE_LENGTH, check_metadata


def test_within_the_limits_is_kept_as_given():
    edge = {f"{i:0{MAX_KEY_LENGTH}d}": "v" * MAX_VALUE_LENGTH for i in range(MAX_KEYS)}
    assert check_metadata(edge) == edge
    assert check_metadata({}) == {}


@pytest.mark.parametrize(
    ("metadata", "says"),
    [
        ({f"k{i}": "v" for i in range(MAX_KEYS + 1)}, "at most 20 keys (21 given)"),
        ({"k" * (MAX_KEY_LENGTH + 1): "v"}, "1 to 40 characters"),
        ({"": "v"}, "1 to 40 characters"),
        ({"k": "v" * (MAX_VALUE_LENGTH + 1)}, "at most 500 characters"),
        ({"k": 7}, "strings"),
        ({"k": "a\x00"}, "NUL"),
    ],
)
def test_past_a_limit_says_which(metadata, says):
    with pytest.raises(ValueError, match=says.replace("(", r"\(").replace(")", r"\)")):
        check_metadata(metadata)
