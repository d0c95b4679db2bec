"""A task's completion webhook: ``callback_url`` and ``callback_events`` of a submit (docs/webhooks.md).

A submit may carry ``callback_url`` (and ``callback_events``: ``["terminal"]``, the default, and/or
``"progress"`` for the 25/50/75 % milestones); a task type may declare defaults (``@task(...,
callback_url=...)``). The URL is held to the same server-side request forgery rules as
``web_scrape`` (:mod:`tasklift.security.ssrf`, with the ``webhook_*`` settings) at submit, and
again before every delivery (a DNS answer may change in between), and must be https unless
``webhook_allow_private`` lets it reach loopback (development and tests). A host that does not
resolve at submit is accepted (DNS may be down, or answer otherwise where the deliverer runs):
the delivery's own vetting decides, and retries.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from tasklift.security import ssrf
from tasklift.settings import Settings
from tasklift.tasks.registry import TaskType

#: The events a callback may ask for.
EVENTS = ("terminal", "progress")
#: The submit's fields this module reads (they are not the task type's input).
FIELDS = ("callback_url", "callback_events")
MAX_URL_LENGTH = 2048


class BadCallback(ValueError):
    """A callback field is refused; ``field`` names it, ``msg`` says why (a 422 at submit).

    ``transient``: only because its host does not resolve now (a submit accepts it: every delivery
    vets the URL again, and an attempt refused so is retried, as web_scrape retries it).
    """

    def __init__(self, field: str, msg: str, *, transient: bool = False) -> None:
        super().__init__(f"{field}: {msg}")
        self.field = field
        self.msg = msg
        self.transient = transient


@dataclass(frozen=True)
class Callback:
    """Where a task's webhooks go and which events it wants."""

    url: str
    events: tuple[str, ...] = ("terminal",)


def split(body: Any) -> tuple[Any, dict[str, Any]]:
    """``body`` without the callback fields, and those fields (a body that is not an object is kept)."""
    if not isinstance(body, dict) or not any(name in body for name in FIELDS):
        return body, {}
    rest = {k: v for k, v in body.items() if k not in FIELDS}
    return rest, {k: body[k] for k in FIELDS if k in body}


def requested(fields: Mapping[str, Any], ttype: TaskType) -> Callback | None:
    """The callback a submit asks for (its fields, else the type's defaults), checked for shape only.

    Raises:
        BadCallback: not a string URL, too long, or events that are not a list of known names.
    """
    url = fields.get("callback_url")
    events = fields.get("callback_events")
    if url is None:
        url = ttype.callback_url
        if url is None:
            if events is not None:
                raise BadCallback("callback_events", "needs a callback_url")
            return None
    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH:
        raise BadCallback("callback_url", f"must be a URL of at most {MAX_URL_LENGTH} characters")
    if events is None:
        events = list(ttype.callback_events)
    if not isinstance(events, list) or not events or not all(isinstance(e, str) and e in EVENTS for e in events):
        raise BadCallback("callback_events", f"must be a non-empty list of {', '.join(EVENTS)}")
    return Callback(url, tuple(dict.fromkeys(events)))


def vet_url(url: str, settings: Settings) -> ssrf.Target:
    """The vetted hop for a callback URL (https unless ``webhook_allow_private``; web_scrape's SSRF rules).

    Blocks on DNS: call it in a thread from async code.

    Raises:
        BadCallback: the URL is refused, or (``transient``) its host does not resolve.
    """
    try:
        scheme = httpx.URL(url).scheme
    except (httpx.InvalidURL, TypeError):
        raise BadCallback("callback_url", "not a valid URL") from None
    if scheme != "https" and not settings.webhook_allow_private:
        raise BadCallback("callback_url", "must be an https URL")
    try:
        return ssrf.vet(url, allowed_ports=settings.webhook_allowed_ports, allow_private=settings.webhook_allow_private)
    except ssrf.BlockedTarget as exc:
        raise BadCallback("callback_url", str(exc)) from None
    except ssrf.UnresolvableHost as exc:
        raise BadCallback("callback_url", str(exc), transient=True) from None
