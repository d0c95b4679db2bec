"""Who is calling: the :class:`Identity` that authentication establishes for one request.

The handlers receive a host-neutral :class:`~tasklift.http.types.HttpRequest` whose ``principal``
names the owner of the tasks it submits. Whether that caller may see *other* principals' tasks
(an admin, or a stream token for one task) is carried beside it in a context variable that
:func:`tasklift.http.guard.guard` sets around the handler, so the handlers and the resource
renderer can ask without every signature growing a parameter.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True)
class Identity:
    """An authenticated caller."""

    #: the owner of what this caller submits: ``key:<name>``, ``oidc:<sub>`` or ``anonymous``
    principal: str
    #: sees and acts on every principal's tasks
    admin: bool = False
    #: set for a stream token: the one task whose stream it opens, whoever owns it
    task_id: str | None = None
    #: how the caller proved who it is: ``api-key``, ``oidc``, ``stream-token`` or ``anonymous``
    method: str = "anonymous"
    #: the API key it authenticated with (its id): stream tokens carry it, so revoking the key ends them
    key_id: str | None = None

    @property
    def is_anonymous(self) -> bool:
        return self.method == "anonymous"


ANONYMOUS = Identity("anonymous")

_current: ContextVar[Identity | None] = ContextVar("tasklift_identity", default=None)


def current_identity() -> Identity | None:
    """The identity of the request being handled, or None outside one."""
    return _current.get()


@contextmanager
def acting_as(identity: Identity) -> Iterator[None]:
    """Make ``identity`` the current one for the duration of the block."""
    token = _current.set(identity)
    try:
        yield
    finally:
        _current.reset(token)
