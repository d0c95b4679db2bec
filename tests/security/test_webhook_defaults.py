"""A principal's default webhook (``tasklift keys webhook``; docs/webhooks.md): its submits that name
no callback_url, of types that declare none, get it; a submit's own URL and a type's default win;
a URL the SSRF rules refuse is refused by the command."""

from __future__ import annotations

import httpx
import sqlalchemy as sa

from tests.security.test_cli_keys import tasklift
from tests.support.task_types import HOOKED_URL

DEFAULT = "https://93.184.215.20/alice"


def _callbacks(db: sa.Engine) -> dict[str, tuple[str, list[str]]]:
    with db.connect() as conn:
        return {str(r.task_id): (r.url, r.events) for r in conn.execute(sa.text("SELECT * FROM task_callbacks"))}


def test_a_principals_default_applies_to_its_submits_that_name_none(
    secure_env: dict[str, str], alice: httpx.Client, bob: httpx.Client, db: sa.Engine
) -> None:
    done = tasklift("keys", "webhook", "key:alice", "--url", DEFAULT, "--events", "terminal,progress", env=secure_env)
    assert done.returncode == 0, done.stderr
    assert f"key:alice: {DEFAULT} (terminal, progress)" in done.stdout
    plain = alice.post("/tasks", json={"task_type": "test_noop"}).json()["task_id"]
    own = alice.post("/tasks", json={"task_type": "test_noop", "callback_url": "https://93.184.215.21/own"})
    typed = alice.post("/tasks", json={"task_type": "test_hooked"}).json()["task_id"]
    bobs = bob.post("/tasks", json={"task_type": "test_noop"}).json()["task_id"]
    assert _callbacks(db) == {
        plain: (DEFAULT, ["terminal", "progress"]),
        own.json()["task_id"]: ("https://93.184.215.21/own", ["terminal"]),
        typed: (HOOKED_URL, ["terminal", "progress"]),
    }
    assert bobs not in _callbacks(db)

    assert tasklift("keys", "webhook", "key:alice", "--clear", env=secure_env).returncode == 0
    later = alice.post("/tasks", json={"task_type": "test_noop"}).json()["task_id"]
    assert later not in _callbacks(db) and plain in _callbacks(db)  # earlier tasks keep theirs
    shown = tasklift("keys", "webhook", "key:alice", env=secure_env)
    assert shown.returncode == 0 and "has no default webhook" in shown.stderr


def test_the_command_refuses_what_a_submit_would(secure_env: dict[str, str], db: sa.Engine) -> None:
    for args in (
        ["--url", "https://169.254.169.254/"],
        ["--url", "http://93.184.215.20/"],
        ["--url", DEFAULT, "--events", "x"],
    ):
        done = tasklift("keys", "webhook", "key:alice", *args, env=secure_env)
        assert done.returncode != 0, (args, done.stdout)
    with db.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM principal_callbacks")).scalar() == 0
