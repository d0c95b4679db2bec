"""No secret in a log line: passwords in URLs, API keys, bearer and stream tokens are masked.

Credentials only ever come from settings, but a URL from settings, an exception message or a
request line can still carry them into a log. :class:`RedactingFormatter` wraps any formatter and
masks the finished line, so the message, its arguments and a traceback are all covered whatever
the format (JSON or console).
"""

from __future__ import annotations

import logging
import re

MASK = "***"

_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # scheme://user:password@host (PostgreSQL, Redis, AMQP URLs...) → scheme://user:***@host
    (re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/?#@\s]*:)[^@/\s]+@"), rf"\g<head>{MASK}@"),
    # libpq key/value strings and query strings: password=…
    (re.compile(r"(?i)\b(?P<head>password\s*=\s*)[^\s&;'\"]+"), rf"\g<head>{MASK}"),
    # Authorization: Bearer <token>
    (re.compile(r"(?i)\b(?P<head>bearer\s+)[A-Za-z0-9\-._~+/]+=*"), rf"\g<head>{MASK}"),
    # stream links' tokens in URLs
    (re.compile(r"(?P<head>[?&]access_token=)[^&\s'\"]+"), rf"\g<head>{MASK}"),
    # tasklift API keys wherever they appear
    (re.compile(r"\btl_[A-Za-z0-9_\-]{16,}"), f"tl_{MASK}"),
]


def redact(text: str) -> str:
    """``text`` with every credential the patterns above recognise masked."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFormatter(logging.Formatter):
    """Formats with ``inner`` (default: the standard formatter), then masks credentials."""

    def __init__(self, inner: logging.Formatter | None = None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        return redact(self.inner.format(record))


def install_redaction(logger: logging.Logger | None = None) -> None:
    """Make every handler of ``logger`` (default: the root logger) redact what it writes (idempotent)."""
    for handler in (logger or logging.getLogger()).handlers:
        if not isinstance(handler.formatter, RedactingFormatter):
            handler.setFormatter(RedactingFormatter(handler.formatter))
