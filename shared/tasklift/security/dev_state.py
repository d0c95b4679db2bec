"""What ``tasklift dev`` keeps in its data folder for the other local commands.

- ``dev.json``: the supervisor's pid and the URLs of the PostgreSQL and Redis it runs, while it
  runs, so that ``tasklift keys`` acts on the same database whether or not ``dev`` is up.
- ``stream-signing-key``: the HMAC key of stream links, generated once and kept, so that links
  stay valid across restarts of the dev stack. Delete the file to rotate it.
- ``webhook-secret``: the Standard Webhooks signing secret (``whsec_…``) of the dev stack's
  webhooks (docs/webhooks.md), kept the same way, so a local receiver keeps verifying.

Both files are readable by their owner only (0600): they hold a secret, or URLs that may.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

STATE_FILE = "dev.json"
SIGNING_KEY_FILE = "stream-signing-key"
WEBHOOK_SECRET_FILE = "webhook-secret"


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(tmp, path)  # atomic: a reader sees the old file or the new one, never half of one


def ensure_signing_key(data_dir: Path) -> str:
    """The dev stack's stream-signing key, created on first use."""
    path = data_dir / SIGNING_KEY_FILE
    if path.exists():
        key = path.read_text().strip()
        if key:
            return key
    key = secrets.token_urlsafe(32)
    _write_private(path, key + "\n")
    return key


def ensure_webhook_secret(data_dir: Path) -> str:
    """The dev stack's webhook signing secret (``whsec_`` + base64 of 24 random bytes), created on first use."""
    path = data_dir / WEBHOOK_SECRET_FILE
    if path.exists():
        secret = path.read_text().strip()
        if secret:
            return secret
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    _write_private(path, secret + "\n")
    return secret


def write_state(data_dir: Path, **state: Any) -> None:
    """Record that this process runs the dev stack described by ``state``."""
    _write_private(data_dir / STATE_FILE, json.dumps({"pid": os.getpid(), **state}, indent=2) + "\n")


def clear_state(data_dir: Path) -> None:
    """Remove the state file if this process wrote it."""
    path = data_dir / STATE_FILE
    with contextlib.suppress(FileNotFoundError, ValueError, KeyError, TypeError):
        if json.loads(path.read_text())["pid"] == os.getpid():
            path.unlink()


def read_live_state(data_dir: Path) -> dict[str, Any] | None:
    """The state of a ``tasklift dev`` that is running now, or None (no file, or its process is gone)."""
    try:
        state = json.loads((data_dir / STATE_FILE).read_text())
        pid = int(state["pid"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, owned by another user
    return state if isinstance(state, dict) else None
