"""``web_scrape``: fetch a page and report its title, description and tag counts.

Outbound requests are a server-side request forgery risk, so every hop (the URL and each
redirect) must resolve only to global addresses unless ``TASKLIFT_SCRAPE_ALLOW_PRIVATE`` is set,
only http/https are allowed, and the response is bounded in time and size.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urljoin, urlsplit

import httpx
from bs4 import BeautifulSoup
from pydantic import AnyHttpUrl, BaseModel, Field

from tasklift.settings import get_settings
from tasklift.tasks.context import TaskContext
from tasklift.tasks.registry import RetryableError, TaskInput, task

MAX_REDIRECTS = 5


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


class BlockedTarget(ValueError):
    """The URL points at an address tasklift refuses to reach (not retryable)."""


class FetchFailed(RetryableError):
    """A transient network failure (retried with back-off)."""


def vet_url(url: str) -> None:
    """Refuse schemes other than http/https and hosts resolving to non-global addresses."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BlockedTarget(f"only http and https URLs are allowed: {url}")
    if get_settings().scrape_allow_private:
        return
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    except socket.gaierror as exc:
        raise FetchFailed(f"cannot resolve {parts.hostname}: {exc}") from exc
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        mapped = getattr(address, "ipv4_mapped", None)
        if not (mapped or address).is_global:
            raise BlockedTarget(f"{parts.hostname} resolves to a non-public address ({address}); refused")


def fetch(url: str) -> tuple[str, bytes]:
    """GET ``url`` following redirects by hand, vetting every hop; returns (final URL, body)."""
    settings = get_settings()
    timeout = httpx.Timeout(settings.scrape_timeout_seconds)
    with httpx.Client(timeout=timeout, follow_redirects=False, headers={"User-Agent": "tasklift-scraper/0.1"}) as client:
        for _ in range(MAX_REDIRECTS + 1):
            vet_url(url)
            try:
                with client.stream("GET", url) as response:
                    if response.is_redirect:
                        url = urljoin(url, response.headers["location"])
                        continue
                    if response.status_code >= 500 or response.status_code == 429:
                        raise FetchFailed(f"{url} answered {response.status_code}")
                    response.raise_for_status()
                    body = bytearray()
                    for chunk in response.iter_bytes():
                        body += chunk
                        if len(body) > settings.scrape_max_bytes:
                            raise BlockedTarget(f"response larger than {settings.scrape_max_bytes} bytes")
                    return url, bytes(body)
            except httpx.TransportError as exc:
                raise FetchFailed(f"{url}: {exc}") from exc
    raise BlockedTarget(f"more than {MAX_REDIRECTS} redirects")


@task("web_scrape", input=ScrapeInput, queue="io", timeout=120, retries=3, backoff_base=1.0)
def web_scrape(ctx: TaskContext, inp: ScrapeInput) -> ScrapeResult:
    """Scrape a web page: title, meta description and counts of h1 tags, links and images."""
    url = str(inp.url)
    ctx.progress(10, "Connecting to site...")
    ctx.log(f"Starting scrape for {url}")
    final_url, body = fetch(url)
    ctx.progress(50, "Parsing HTML...")
    ctx.log(f"Fetched {len(body)} bytes from {final_url}")
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
