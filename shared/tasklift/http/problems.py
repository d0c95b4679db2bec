"""RFC 9457 problem details: every 4xx/5xx body. No stack trace, SQL or address ever leaks."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from tasklift.http.types import HttpResponse, dumps

PROBLEM_TYPE_BASE = "https://tasklift.dev/problems/"


class Problem(Exception):
    """Raise to answer with a problem+json response."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        title: str | None = None,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        slug: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.title = title or HTTPStatus(status).phrase
        self.errors = errors or []
        self.headers = headers or {}
        self.slug = slug or self.title.lower().replace(" ", "-")


def problem_response(problem: Problem, instance: str) -> HttpResponse:
    """Render a :class:`Problem` as ``application/problem+json``."""
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + problem.slug,
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
        "instance": instance,
    }
    if problem.errors:
        body["errors"] = problem.errors
    headers = {"Content-Type": "application/problem+json", **problem.headers}
    return HttpResponse(problem.status, headers, dumps(body))
