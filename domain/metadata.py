"""Metadata: the caller's own key/value strings on accounts, money requests and batches.

Settle stores and returns them and includes them in events; it never interprets them.
The limits keep rows and event payloads bounded and the GIN index of transfers small.
"""

from __future__ import annotations

from collections.abc import Mapping

MAX_KEYS = 20
MAX_KEY_LENGTH = 40
MAX_VALUE_LENGTH = 500


def check_metadata(metadata: Mapping[str, object]) -> dict[str, str]:
    """The metadata as stored, or ValueError saying which limit it breaks and what to do."""
    if len(metadata) > MAX_KEYS:
        raise ValueError(
            f"metadata holds at most {MAX_KEYS} keys ({len(metadata)} given); "
            "merge or drop some keys"
        )
    for key, value in metadata.items():
        if not key or len(key) > MAX_KEY_LENGTH:
            raise ValueError(
                f"metadata keys are 1 to {MAX_KEY_LENGTH} characters ({key[:50]!r} is "
                f"{len(key)}); shorten the key"
            )
        if not isinstance(value, str):
            raise ValueError(
                f"metadata values are strings (the value of {key!r} is not); "
                "send numbers and flags as strings"
            )
        if "\x00" in key or "\x00" in value:
            # PostgreSQL text (and jsonb) cannot hold NUL.
            raise ValueError("metadata must not contain NUL characters; remove them")
        if len(value) > MAX_VALUE_LENGTH:
            raise ValueError(
                f"metadata values are at most {MAX_VALUE_LENGTH} characters (the value of "
                f"{key!r} is {len(value)}); store longer data elsewhere and reference it"
            )
    return {str(key): str(value) for key, value in metadata.items()}
