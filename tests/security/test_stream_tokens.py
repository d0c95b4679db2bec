"""Stream links: a short-lived, task-scoped signed token instead of credentials (EventSource sends no headers)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from tasklift.security import stream_tokens
from tasklift.settings import Settings
from tests.security.conftest import SIGNING_KEY, submit
from tests.security.test_cli_keys import tasklift


def _token(link: str) -> str:
    return parse_qs(urlsplit(link).query)["access_token"][0]


def _tampered(token: str) -> str:
    """``token`` with the end of its signature changed (never to what it already was)."""
    return token[:-2] + ("BB" if token.endswith("AA") else "AA")


def _first_event(url: str, **kwargs: object) -> tuple[int, str]:
    """Open a stream, read up to its first event (a status snapshot), close it."""
    with httpx.stream("GET", url, timeout=10, **kwargs) as resp:  # type: ignore[arg-type]
        if resp.status_code != 200:
            return resp.status_code, resp.read().decode()
        text = ""
        for chunk in resp.iter_text():
            text += chunk
            if "event: status" in text:
                break
        return resp.status_code, text


def test_links_stream_carries_a_task_scoped_token_and_never_the_credential(
    make_key: Callable[..., str], client_for: Callable[..., httpx.Client], db: sa.Engine
) -> None:
    key = make_key("alice")
    http = client_for(key)
    task = submit(http)
    link = task["links"]["stream"]
    assert link.startswith(f"/tasks/{task['task_id']}/stream?access_token=v1.")
    for body in (http.get(f"/tasks/{task['task_id']}").text, http.get("/tasks").text):
        assert key not in body and key[:10] not in body
    settings = Settings(stream_signing_key=SIGNING_KEY)
    grant = stream_tokens.verify(_token(link), task["task_id"], settings)
    assert grant.principal == "key:alice"
    assert 0 < grant.expires_at - time.time() <= 600  # the default lifetime: ten minutes


def test_the_stream_opens_with_the_link_alone(secure_api: str, alice: httpx.Client) -> None:
    task = submit(alice)
    status, text = _first_event(secure_api + task["links"]["stream"])  # no Authorization header
    assert status == 200 and f'"task_id":"{task["task_id"]}"' in text


def test_a_link_token_opens_nothing_but_its_own_tasks_stream(secure_api: str, alice: httpx.Client) -> None:
    first, second = submit(alice), submit(alice)
    token = _token(first["links"]["stream"])
    assert httpx.get(f"{secure_api}/tasks/{first['task_id']}", params={"access_token": token}).status_code == 401
    assert httpx.get(f"{secure_api}/tasks", params={"access_token": token}).status_code == 401
    status, _ = _first_event(f"{secure_api}/tasks/{second['task_id']}/stream", params={"access_token": token})
    assert status == 401


def test_a_link_handed_to_another_principal_still_opens_only_that_stream(
    secure_api: str, alice: httpx.Client, bob: httpx.Client
) -> None:
    """The link is a capability for one stream: whoever holds it may follow that task, nothing more."""
    task = submit(alice)
    status, _ = _first_event(secure_api + task["links"]["stream"], headers={})
    assert status == 200
    assert bob.get(f"/tasks/{task['task_id']}").status_code == 404


@pytest.mark.parametrize("damage", ["expired", "tampered", "other key", "garbage"])
def test_expired_tampered_or_foreign_tokens_are_401(secure_api: str, alice: httpx.Client, damage: str) -> None:
    task = submit(alice)
    settings = Settings(stream_signing_key=SIGNING_KEY)
    token = {
        "expired": stream_tokens.issue(task["task_id"], "key:alice", settings, now=time.time() - 601),
        "tampered": _tampered(_token(task["links"]["stream"])),
        "other key": stream_tokens.issue(task["task_id"], "key:alice", Settings(stream_signing_key="another-key")),
        "garbage": "v1.abc.def",
    }[damage]
    status, body = _first_event(f"{secure_api}/tasks/{task['task_id']}/stream", params={"access_token": token})
    assert status == 401 and "stream link" in body


def test_tokens_of_the_previous_signing_key_verify_during_rotation() -> None:
    old = Settings(stream_signing_key="key-2025")
    token = stream_tokens.issue("t1", "key:alice", old)
    rotating = Settings(stream_signing_key="key-2026", stream_signing_previous_keys=[SecretStr("key-2025")])
    assert stream_tokens.verify(token, "t1", rotating).principal == "key:alice"
    with pytest.raises(stream_tokens.BadStreamToken):
        stream_tokens.verify(token, "t1", Settings(stream_signing_key="key-2026"))  # rotation finished


def test_anonymous_development_links_carry_no_token(configure: Callable[..., None], client_for) -> None:
    configure(anonymous="true")
    task = submit(client_for())
    assert task["links"]["stream"] == f"/tasks/{task['task_id']}/stream"


class OpenStream:
    """A stream read to its end in a thread: when it ended, how, and what it sent."""

    def __init__(self, url: str, **kwargs: object) -> None:
        self.ended_at: float | None = None
        self.error: Exception | None = None  #: how it ended if not cleanly
        self.text = ""
        self.opened = threading.Event()
        self.http = httpx.Client(timeout=30)
        self.thread = threading.Thread(target=self._read, args=(url, kwargs), daemon=True)
        self.thread.start()
        assert self.opened.wait(10), "the stream did not open"

    def _read(self, url: str, kwargs: dict[str, object]) -> None:
        try:
            with self.http.stream("GET", url, **kwargs) as resp:  # type: ignore[arg-type]
                for chunk in resp.iter_text():
                    self.text += chunk
                    if resp.status_code == 200 and "event: status" in self.text:
                        self.opened.set()
        except (httpx.HTTPError, RuntimeError) as exc:  # RuntimeError: closed under the reader by close()
            self.error = exc
        self.ended_at = time.monotonic()

    def close(self) -> None:
        self.http.close()
        self.thread.join(10)


@pytest.fixture
def quick_key_checks(configure: Callable[..., None]) -> float:
    """Key checks every 2 s on resync rounds of 1 s: set before the API starts, whose runtime builds
    the hub from the settings (tasklift.http.runtime); returns the bound on a revoked stream."""
    configure(stream_token_key_check_seconds=2, stream_resync_seconds=1)
    return 2 + 1


def test_a_revoked_keys_open_streams_end_within_the_bound_and_its_links_are_refused_at_once(
    quick_key_checks: float,
    secure_env: dict[str, str],
    secure_api: str,
    alice: httpx.Client,
    bob: httpx.Client,
) -> None:
    """Revoked with ``tasklift keys revoke``: alice's streams (by link, and by key) end within
    stream_token_key_check_seconds + stream_resync_seconds; bob's runs on; a new open is 401."""
    bound = quick_key_checks
    task, theirs = submit(alice), submit(bob)  # test_noop: stays PENDING (no worker), so no stream ends on its own
    by_link = OpenStream(secure_api + task["links"]["stream"])
    by_key = OpenStream(f"{secure_api}/tasks/{task['task_id']}/stream", headers=alice.headers)
    others = OpenStream(secure_api + theirs["links"]["stream"])

    assert tasklift("keys", "revoke", "alice", env=secure_env).returncode == 0
    revoked = time.monotonic()
    assert _first_event(secure_api + task["links"]["stream"])[0] == 401  # at once, not after a period
    for stream in (by_link, by_key):
        stream.thread.join(bound + 2)  # + slack for a loaded machine
        assert stream.ended_at is not None, "the revoked key's stream is still open"
        assert stream.error is None and stream.ended_at - revoked <= bound + 2
        assert "event: status" in stream.text and stream.text.count("event: status") == 1  # no terminal event
    time.sleep(1)
    assert others.ended_at is None, "a stream of an unrevoked key ended"
    others.close()
    assert _first_event(secure_api + theirs["links"]["stream"])[0] == 200
