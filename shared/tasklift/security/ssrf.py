"""Which addresses an outbound request (``web_scrape``) may reach: server-side request forgery.

A URL is vetted as a whole before each hop (the first request and every redirect):

- scheme http or https, a port from ``scrape_allowed_ports`` (default 80 and 443), no userinfo;
- the host is resolved *here*, once, and every address it resolves to must be public: not
  loopback, private (RFC 1918, fc00::/7), link-local (169.254/16 with the cloud metadata service
  at 169.254.169.254, fe80::/10), shared (100.64/10), multicast, reserved or unspecified; an
  IPv6 address that embeds an IPv4 one (IPv4-mapped ::ffff:0:0/96, NAT64 64:ff9b::/96, 6to4
  2002::/16, Teredo) is judged by the IPv4 address inside;
- the request then goes to the vetted address itself, with the original ``Host`` header and,
  for https, the original name as TLS SNI and certificate name: a second DNS answer (DNS
  rebinding) is never consulted.

``scrape_allow_private`` lifts the address rule (local tests and development), nothing else.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_PORTS = {"http": 80, "https": 443}
NAT64 = ipaddress.ip_network("64:ff9b::/96")
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


class BlockedTarget(ValueError):
    """The URL points somewhere tasklift refuses to reach (not retryable)."""


class UnresolvableHost(OSError):
    """The host name did not resolve (may be transient)."""


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for, if it is one of the embedding formats."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in NAT64 or address in IPV4_COMPATIBLE:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_public(address: IPAddress) -> bool:
    """True if ``address`` is a global unicast address (and so is any IPv4 address it embeds)."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = embedded_ipv4(address)
        if inner is not None:
            return is_public(inner)
    return address.is_global and not address.is_multicast


@dataclass(frozen=True)
class Target:
    """A vetted hop: where to connect, and the name to present there."""

    url: httpx.URL  #: as given
    address: IPAddress  #: the vetted address to connect to

    @property
    def connect_url(self) -> httpx.URL:
        """``url`` with the vetted address in place of the host name."""
        return self.url.copy_with(host=str(self.address))

    @property
    def host_header(self) -> str:
        host = self.url.raw_host.decode("ascii")
        if ":" in host:  # an IPv6 literal
            host = f"[{host}]"
        return host if self.url.port is None else f"{host}:{self.url.port}"

    @property
    def extensions(self) -> dict[str, str]:
        """For https: the original name for SNI and certificate verification (httpcore extension)."""
        return {"sni_hostname": self.url.raw_host.decode("ascii")} if self.url.scheme == "https" else {}


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to (an IP literal resolves to itself)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnresolvableHost(f"cannot resolve {host}: {exc}") from None
    addresses: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])  # drop an IPv6 zone id
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise UnresolvableHost(f"{host} has no address")
    return addresses


def vet(url: str | httpx.URL, *, allowed_ports: list[int], allow_private: bool = False) -> Target:
    """Check ``url`` against the rules above and pick the address to connect to.

    Raises:
        BlockedTarget: scheme, port, userinfo or address refused.
        UnresolvableHost: the name does not resolve.
    """
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise BlockedTarget(f"not a valid URL: {exc}") from None
    if parsed.scheme not in DEFAULT_PORTS or not parsed.raw_host:
        raise BlockedTarget(f"only http and https URLs with a host are allowed: {parsed}")
    if parsed.userinfo:
        raise BlockedTarget("URLs with credentials (user:password@) are not allowed")
    port = parsed.port or DEFAULT_PORTS[parsed.scheme]
    if port not in allowed_ports:
        raise BlockedTarget(f"port {port} is not allowed (allowed: {sorted(allowed_ports)})")
    host = parsed.raw_host.decode("ascii")
    addresses = resolve(host, port)
    if not allow_private:
        refused = [a for a in addresses if not is_public(a)]
        if refused:
            raise BlockedTarget(f"{host} resolves to a non-public address ({refused[0]}); refused")
    return Target(parsed, addresses[0])
