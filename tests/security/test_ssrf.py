"""web_scrape's outbound requests: only public addresses, the vetted address itself, every redirect re-checked."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from tasklift.builtin.web_scrape import BlockedTarget, FetchFailed, fetch
from tasklift.security.ssrf import is_public, vet
from tasklift.settings import get_settings
from tests.conftest import wait_for_status
from tests.support import http_server
from tests.support.http_server import QuietHandler

PUBLIC_V4 = "93.184.216.34"
PUBLIC_V6 = "2606:2800:220:1:248:1893:25c8:1946"

NON_PUBLIC = [
    "127.0.0.1", "127.1.2.3", "0.0.0.0", "10.0.0.5", "172.16.0.1", "192.168.1.1",
    "169.254.169.254",  # cloud metadata service
    "100.64.0.1",  # carrier-grade NAT (shared address space)
    "192.0.0.1", "198.18.0.1", "224.0.0.1", "239.255.255.250", "255.255.255.255",
    "::1", "::", "fe80::1", "fc00::1", "fd12:3456::1", "ff02::1", "2001:db8::1",
    "::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:10.0.0.1",  # IPv4-mapped
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    "2002:a00:1::1",  # 6to4 of 10.0.0.1
    "::7f00:1",  # IPv4-compatible 127.0.0.1
]  # fmt: skip


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Fake DNS: name → answers; each lookup pops the first answer while more than one is left."""
    answers: dict[str, list[str]] = {}
    lookups: list[str] = []

    def getaddrinfo(host: str, port: int, *args: object, **kwargs: object) -> list[tuple]:
        lookups.append(host)
        queue = answers.get(host) or [host]
        address = queue.pop(0) if len(queue) > 1 else queue[0]
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        return [(family, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    answers["__lookups__"] = lookups
    return answers


@pytest.mark.parametrize("address", NON_PUBLIC)
def test_names_resolving_to_non_public_addresses_are_refused(resolver, address: str) -> None:
    resolver["evil.test"] = [address]
    with pytest.raises(BlockedTarget, match="non-public"):
        vet("http://evil.test/", allowed_ports=[80])
    assert not is_public(__import__("ipaddress").ip_address(address))


def test_a_name_with_one_private_address_among_public_ones_is_refused(monkeypatch) -> None:
    def getaddrinfo(host: str, port: int, *args: object, **kwargs: object) -> list[tuple]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in (PUBLIC_V4, "10.0.0.1")]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    with pytest.raises(BlockedTarget):
        vet("http://mixed.test/", allowed_ports=[80])


@pytest.mark.parametrize("address", [PUBLIC_V4, PUBLIC_V6])
def test_public_addresses_are_allowed(resolver, address: str) -> None:
    resolver["ok.test"] = [address]
    assert str(vet("https://ok.test/", allowed_ports=[443]).address) == address


@pytest.mark.parametrize(
    "url",
    ["ftp://ok.test/", "file:///etc/passwd", "gopher://ok.test/", "http://ok.test:8080/", "https://ok.test:22/",
     "http://user:pass@ok.test/", "http:///nohost"],
)  # fmt: skip
def test_only_http_and_https_on_allowed_ports_without_credentials(resolver, url: str) -> None:
    resolver["ok.test"] = [PUBLIC_V4]
    with pytest.raises(BlockedTarget):
        vet(url, allowed_ports=[80, 443])


def test_allow_private_lifts_the_address_rule_only(resolver) -> None:
    assert str(vet("http://127.0.0.1/", allowed_ports=[80], allow_private=True).address) == "127.0.0.1"
    with pytest.raises(BlockedTarget):
        vet("http://127.0.0.1:8080/", allowed_ports=[80], allow_private=True)


def _recorder(responses: dict[str, httpx.Response]) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return responses[request.headers["host"]]

    return httpx.MockTransport(handle), seen


def test_the_request_goes_to_the_vetted_address_with_the_original_host_and_sni(resolver, tasklift_env) -> None:
    """DNS rebinding: the name answers public first, loopback after; only the first answer is used."""
    resolver["rebind.test"] = [PUBLIC_V4, "127.0.0.1"]
    transport, seen = _recorder({"rebind.test": httpx.Response(200, html="<title>ok</title>")})
    final, body = fetch("https://rebind.test/page?q=1", transport=transport)
    assert (final, body) == ("https://rebind.test/page?q=1", b"<title>ok</title>")
    [request] = seen
    assert request.url.host == PUBLIC_V4 and request.url.raw_path == b"/page?q=1"
    assert request.headers["host"] == "rebind.test"
    assert request.extensions["sni_hostname"] == "rebind.test"
    assert [h for h in resolver["__lookups__"] if h.endswith(".test")] == ["rebind.test"]  # resolved once only


def test_every_redirect_is_vetted_again(resolver, tasklift_env) -> None:
    resolver["start.test"] = [PUBLIC_V4]
    resolver["metadata.test"] = ["169.254.169.254"]
    transport, seen = _recorder(
        {"start.test": httpx.Response(302, headers={"Location": "http://metadata.test/latest/meta-data/"})}
    )
    with pytest.raises(BlockedTarget, match="169.254.169.254"):
        fetch("http://start.test/", transport=transport)
    assert len(seen) == 1  # the metadata service was never asked


def test_a_redirect_to_another_scheme_is_refused(resolver, tasklift_env) -> None:
    resolver["start.test"] = [PUBLIC_V4]
    transport, _ = _recorder({"start.test": httpx.Response(301, headers={"Location": "file:///etc/passwd"})})
    with pytest.raises(BlockedTarget):
        fetch("http://start.test/", transport=transport)


def test_responses_over_the_size_cap_are_refused(resolver, tasklift_env, monkeypatch) -> None:
    monkeypatch.setenv("TASKLIFT_SCRAPE_MAX_BYTES", "1000")
    get_settings.cache_clear()
    resolver["big.test"] = [PUBLIC_V4]

    def chunks() -> Iterator[bytes]:
        while True:  # no Content-Length: only counting stops it
            yield b"x" * 100

    transport, _ = _recorder({"big.test": httpx.Response(200, content=chunks())})
    with pytest.raises(BlockedTarget, match="larger than 1000"):
        fetch("http://big.test/", transport=transport)


def test_a_server_dripping_bytes_hits_the_overall_deadline(resolver, tasklift_env, monkeypatch) -> None:
    monkeypatch.setenv("TASKLIFT_SCRAPE_TIMEOUT_SECONDS", "0.5")
    get_settings.cache_clear()
    resolver["slow.test"] = [PUBLIC_V4]

    def drip() -> Iterator[bytes]:
        while True:
            time.sleep(0.1)
            yield b"x"

    transport, _ = _recorder({"slow.test": httpx.Response(200, content=drip())})
    started = time.monotonic()
    with pytest.raises(FetchFailed, match="timeout"):
        fetch("http://slow.test/", transport=transport)
    assert time.monotonic() - started < 2


@pytest.fixture
def page_server() -> Iterator[tuple[int, list[str]]]:
    """A local page on 127.0.0.1; records the Host header of every request."""
    hosts: list[str] = []

    class Handler(QuietHandler):
        def do_GET(self) -> None:  # noqa: N802
            hosts.append(self.headers["Host"])
            self.reply(b"<html><head><title>Local page</title></head><body><h1>hi</h1></body></html>", "text/html")

    with http_server.serving(Handler) as server:
        yield server.server_address[1], hosts


def test_the_web_scrape_task_is_failed_when_it_targets_loopback(
    page_server, alice: httpx.Client, start_worker: Callable[..., object]
) -> None:
    port, hosts = page_server
    start_worker(env={"TASKLIFT_SCRAPE_ALLOWED_PORTS": f"[{port}]"})
    task = alice.post("/tasks", json={"task_type": "web_scrape", "url": f"http://localhost:{port}/"}).json()
    done = wait_for_status(alice, task["task_id"], {"SUCCESS", "FAILED"})
    assert done["status"] == "FAILED" and done["error"]["type"] == "BlockedTarget"
    assert hosts == []


def test_scrape_allow_private_lets_local_tests_reach_a_local_page(
    page_server, alice: httpx.Client, start_worker: Callable[..., object]
) -> None:
    port, hosts = page_server
    start_worker(env={"TASKLIFT_SCRAPE_ALLOW_PRIVATE": "true", "TASKLIFT_SCRAPE_ALLOWED_PORTS": f"[{port}]"})
    task = alice.post("/tasks", json={"task_type": "web_scrape", "url": f"http://localhost:{port}/"}).json()
    done = wait_for_status(alice, task["task_id"], {"SUCCESS", "FAILED"})
    assert done["status"] == "SUCCESS" and done["result"]["title"] == "Local page"
    assert hosts == [f"localhost:{port}"]  # connected to the vetted address, named by its Host header
