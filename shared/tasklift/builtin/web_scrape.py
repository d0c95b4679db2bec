"""``web_scrape``: fetch a page and report its title, description and tag counts.

Outbound requests are a server-side request forgery risk: every hop (the URL and each redirect)
is vetted by :mod:`tasklift.security.ssrf` (http/https on an allowed port, every resolved address
public unless ``TASKLIFT_SCRAPE_ALLOW_PRIVATE`` is set) and the request goes to the very address
that was vetted, so a DNS answer that changes in between (rebinding) is never used. The response
is bounded in size (``scrape_max_bytes``) and in total time (``scrape_timeout_seconds``).
"""

from __future__ import annotations

import time

import httpx
from pydantic import AnyHttpUrl, BaseModel, Field

from tasklift.security.ssrf import BlockedTarget, Target, UnresolvableHost, vet
from tasklift.settings import get_settings
from tasklift.tasks.context import TaskContext
from tasklift.tasks.registry import RetryableError, TaskInput, task

MAX_REDIRECTS = 5

__all__ = ["BlockedTarget", "FetchFailed", "ScrapeInput", "ScrapeResult", "fetch", "vet_url", "web_scrape"]


class ScrapeInput(TaskInput):
    """Input of ``web_scrape``."""

    url: AnyHttpUrl = Field(description="http(s) URL of the page to scrape")


class ScrapeStats(BaseModel):
    h1_tags: int
    links: int
    images: int


class ScrapeResult(BaseModel):
    """The original demo's result shape."""

    url: str
    title: str
    description: str
    stats: ScrapeStats


class FetchFailed(RetryableError):
    """A transient network failure (retried with back-off)."""


def vet_url(url: str | httpx.URL) -> Target:
    """The vetted hop for ``url`` under the current settings (:class:`BlockedTarget` if refused)."""
    settings = get_settings()
    try:
        return vet(url, allowed_ports=settings.scrape_allowed_ports, allow_private=settings.scrape_allow_private)
    except UnresolvableHost as exc:
        raise FetchFailed(str(exc)) from None


def fetch(url: str, *, transport: httpx.BaseTransport | None = None) -> tuple[str, bytes]:
    """GET ``url`` following redirects by hand, vetting every hop; returns (final URL, body).

    ``transport`` replaces the network (tests); the rules are the same.
    """
    settings = get_settings()
    deadline = time.monotonic() + settings.scrape_timeout_seconds
    current = httpx.URL(url)
    # No proxies from the environment (the vetted address must be the one connected to) and no
    # connection reuse (a pooled connection to an address was verified for another name).
    with httpx.Client(
        transport=transport,
        trust_env=False,
        follow_redirects=False,
        limits=httpx.Limits(max_keepalive_connections=0),
        headers={"User-Agent": "tasklift-scraper/0.1", "Accept-Encoding": "identity"},
    ) as client:
        for _ in range(MAX_REDIRECTS + 1):
            target = vet_url(current)
            request = client.build_request(
                "GET",
                target.connect_url,
                headers={"Host": target.host_header},
                extensions={**target.extensions, "timeout": _timeout(deadline)},
            )
            try:
                response = client.send(request, stream=True)
                try:
                    if response.is_redirect:
                        current = current.join(response.headers["location"])
                        continue
                    if response.status_code >= 500 or response.status_code == 429:
                        raise FetchFailed(f"{current} answered {response.status_code}")
                    response.raise_for_status()
                    return str(current), _read_capped(response, settings.scrape_max_bytes, deadline)
                finally:
                    response.close()
            except httpx.TimeoutException as exc:
                raise FetchFailed(f"{current}: timed out") from exc
            except httpx.TransportError as exc:
                raise FetchFailed(f"{current}: {exc}") from exc
    raise BlockedTarget(f"more than {MAX_REDIRECTS} redirects")


def _timeout(deadline: float) -> dict[str, float]:
    """httpx's per-request timeout extension: whatever is left of the overall deadline."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise FetchFailed("the overall scrape timeout ran out")
    return {"connect": left, "read": left, "write": left, "pool": left}


def _read_capped(response: httpx.Response, limit: int, deadline: float) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BlockedTarget(f"response larger than {limit} bytes")
    body = bytearray()
    for chunk in response.iter_bytes():
        body += chunk
        if len(body) > limit:
            raise BlockedTarget(f"response larger than {limit} bytes")
        if time.monotonic() > deadline:  # a server dripping bytes must not hold the worker forever
            raise FetchFailed("the overall scrape timeout ran out")
    return bytes(body)


@task("web_scrape", input=ScrapeInput, queue="io", timeout=120, retries=3, backoff_base=1.0)
def web_scrape(ctx: TaskContext, inp: ScrapeInput) -> ScrapeResult:
    """Scrape a web page: title, meta description and counts of h1 tags, links and images."""
    url = str(inp.url)
    ctx.progress(10, "Connecting to site...")
    ctx.log(f"Starting scrape for {url}")
    final_url, body = fetch(url)
    ctx.progress(50, "Parsing HTML...")
    ctx.log(f"Fetched {len(body)} bytes from {final_url}")
    from bs4 import BeautifulSoup  # only a worker runs this; the API and the Lambda layer go without bs4

    soup = BeautifulSoup(body, "html.parser")
    ctx.progress(80, "Extracting metadata...")
    meta = soup.find("meta", attrs={"name": "description"})
    description = str(meta.get("content")) if meta and meta.get("content") else "No description"
    title = soup.title.string.strip() if soup.title and soup.title.string else "No Title"
    result = ScrapeResult(
        url=url,
        title=title,
        description=description,
        stats=ScrapeStats(
            h1_tags=len(soup.find_all("h1")), links=len(soup.find_all("a")), images=len(soup.find_all("img"))
        ),
    )
    ctx.log("Scrape complete successfully.")
    return result
