"""Secrets stay secret: credentials are masked in logs, and a blank signing key is no key."""

import io
import logging

import pytest

from tasklift.logs import configure_logging


@pytest.mark.parametrize("log_format", ["json", "console"])
def test_configured_logging_masks_passwords_and_keys(log_format: str) -> None:
    configure_logging(log_format, "INFO")
    root = logging.getLogger()
    stream = io.StringIO()
    saved = [h.stream for h in root.handlers]  # type: ignore[attr-defined]
    for handler in root.handlers:
        handler.stream = stream  # type: ignore[attr-defined]
    try:
        logging.getLogger("worker").warning("redis://:hunter2@cache:6380/0 key tl_abcdefghijklmnopqrstuvwxyz012345")
    finally:
        for handler, original in zip(root.handlers, saved, strict=True):
            handler.stream = original  # type: ignore[attr-defined]
    out = stream.getvalue()
    assert "hunter2" not in out and "tl_abcdefghijklmnopqrstuvwxyz012345" not in out
    assert "cache:6380" in out  # the rest of the line is kept


def test_a_blank_stream_signing_key_counts_as_unset() -> None:
    """An unfilled TASKLIFT_STREAM_SIGNING_KEY= line must not sign stream links with an empty key."""
    from tasklift.settings import Settings

    assert Settings(stream_signing_key="").stream_signing_key is None
    assert Settings(stream_signing_key="   ").stream_signing_key is None
    assert Settings(stream_signing_key="k" * 48).stream_signing_key is not None
