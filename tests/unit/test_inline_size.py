"""fits_inline decides exactly as the stored bytes' length would (claims.encode), whatever the value."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from tasklift.blobs import claims

LIMIT = 64

VALUES: list[Any] = [
    {},
    {"x": "a" * 20},
    {"x": "a" * 40},  # over half the limit: measured exactly
    {"x": "a" * 60},
    {"f": [1e-07] * 6},  # orjson writes 1e-7: shorter than the stored bytes
    {"f": [1e-07] * 9},
    {"n": 2**70},  # beyond orjson
    {"n": [2**70] * 4},
    {"é": "ü" * 10},  # length in UTF-8 bytes, not characters
    {"é": "ü" * 25},
]


@pytest.mark.parametrize("value", VALUES)
def test_fits_inline_agrees_with_the_length_of_the_stored_bytes(value: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(claims, "get_settings", lambda: SimpleNamespace(blob_threshold_bytes=LIMIT))
    assert claims.fits_inline(value) == (len(claims.encode(value)) <= LIMIT)


def test_the_cases_cover_both_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(claims, "get_settings", lambda: SimpleNamespace(blob_threshold_bytes=LIMIT))
    assert {claims.fits_inline(value) for value in VALUES} == {True, False}
