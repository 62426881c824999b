"""Which webhook URLs Settle will call: the SSRF policy.

Only http and https, on a port of the allowlist (80, 443, 8080, 8443 by default); the
host is resolved and *every* address it resolves to must be a public internet address.
IPv4: not loopback, private, link-local, shared CGNAT, documentation, benchmarking,
multicast or reserved space. IPv6: inside global unicast 2000::/3 and outside its
special ranges (Teredo, IETF assignments, documentation); IPv4-mapped and
IPv4-compatible forms are refused outright, and NAT64 (64:ff9b::/96) and 6to4
(2002::/16) addresses are judged by the IPv4 address they embed. Checked at
registration and again at delivery, where the sender connects to exactly the address
it checked (no second DNS lookup), so DNS rebinding cannot swap in an internal address
in between.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Collection
from dataclasses import dataclass
from urllib.parse import urlsplit

from domain.errors import InvalidRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_PORTS: frozenset[int] = frozenset({80, 443, 8080, 8443})

_NET = ipaddress.ip_network

# What each non-public range is, in the words a refusal uses. First match wins.
_IPV4_RANGES = [
    (_NET("0.0.0.0/8"), "an unspecified ('this network') address"),
    (_NET("10.0.0.0/8"), "a private address"),
    (_NET("100.64.0.0/10"), "a shared (carrier-grade NAT) address"),
    (_NET("127.0.0.0/8"), "a loopback address"),
    (_NET("169.254.0.0/16"), "a link-local address (cloud metadata services live there)"),
    (_NET("172.16.0.0/12"), "a private address"),
    (_NET("192.0.0.0/24"), "an IETF protocol assignment"),
    (_NET("192.0.2.0/24"), "a documentation address"),
    (_NET("192.88.99.0/24"), "a deprecated 6to4 relay address"),
    (_NET("192.168.0.0/16"), "a private address"),
    (_NET("198.18.0.0/15"), "a benchmarking address"),
    (_NET("198.51.100.0/24"), "a documentation address"),
    (_NET("203.0.113.0/24"), "a documentation address"),
    (_NET("224.0.0.0/4"), "a multicast address"),
    (_NET("240.0.0.0/4"), "a reserved address"),
]
_IPV6_RANGES = [
    (_NET("::/128"), "the unspecified address"),
    (_NET("::1/128"), "the loopback address"),
    (_NET("::ffff:0:0/96"), "an IPv4-mapped address (write the IPv4 address itself)"),
    (_NET("::/96"), "an IPv4-compatible address (a deprecated form)"),
    (_NET("64:ff9b:1::/48"), "a local-use NAT64 address"),
    (_NET("100::/64"), "a discard-only address"),
    (_NET("fc00::/7"), "a unique-local (private) address"),
    (_NET("fe80::/10"), "a link-local address"),
    (_NET("fec0::/10"), "a site-local address (a deprecated private range)"),
    (_NET("ff00::/8"), "a multicast address"),
    (_NET("2001::/32"), "a Teredo tunnel address"),
    (_NET("2001::/23"), "an IETF protocol assignment"),
    (_NET("2001:db8::/32"), "a documentation address"),
    (_NET("3fff::/20"), "a documentation address"),
]
_NAT64 = _NET("64:ff9b::/96")
_GLOBAL_UNICAST = _NET("2000::/3")

_PUBLIC_ONLY = "webhook URLs must point at a public internet address"
_DEVELOPMENT_HINT = (
    " (in development, SETTLE_WEBHOOK_ALLOW_PRIVATE=true lets webhooks reach "
    "private and local addresses; never set it in production)"
)


@dataclass(frozen=True)
class ResolvedUrl:
    url: str
    scheme: str
    host: str
    port: int
    addresses: tuple[IPAddress, ...]


def _refuse(detail: str) -> InvalidRequest:
    return InvalidRequest(detail, code="webhook_url_not_allowed")


def non_public_kind(address: IPAddress) -> str | None:
    """What kind of non-public address `address` is ("a private address"...), or None
    when it is a public internet address."""
    if isinstance(address, ipaddress.IPv4Address):
        kind = next((text for net, text in _IPV4_RANGES if address in net), None)
        return kind or (None if address.is_global else "a non-public address")
    if address in _NAT64:
        embedded = non_public_kind(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        return f"a NAT64 form of {embedded}" if embedded else None
    if address.sixtofour is not None:
        embedded = non_public_kind(address.sixtofour)
        return f"a 6to4 form of {embedded}" if embedded else None
    kind = next((text for net, text in _IPV6_RANGES if address in net), None)
    if kind is None and address not in _GLOBAL_UNICAST:
        kind = "outside the global unicast range 2000::/3"
    # ipaddress's own judgement is a second opinion, never the only one (before
    # Python 3.12.4 it called fec0::/10 global).
    return kind or (None if address.is_global else "a non-public address")


def is_public(address: IPAddress) -> bool:
    return non_public_kind(address) is None


def _port(
    scheme: str, explicit: int | None, allowed: Collection[int], any_port: bool, hint: str
) -> int:
    port = explicit if explicit is not None else (443 if scheme == "https" else 80)
    if port == 0:
        raise _refuse("webhook URL has port 0, which cannot be connected to")
    if not any_port and port not in allowed:
        ports = ", ".join(str(p) for p in sorted(allowed))
        raise _refuse(f"webhook URLs may only use ports {ports}; port {port} is not allowed{hint}")
    return port


def resolve(
    url: str,
    *,
    allow_private: bool,
    allowed_ports: Collection[int] = DEFAULT_PORTS,
    explain_private: bool = False,
) -> ResolvedUrl:
    """Parse, resolve and vet `url`; raises InvalidRequest(webhook_url_not_allowed).

    `allow_private` (development and tests only) lifts both the address and the port
    checks; `explain_private` (development) makes address refusals name that switch.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise _refuse("webhook URLs must use http or https")
    if not parts.hostname:
        raise _refuse("webhook URL has no host")
    if parts.username or parts.password:
        raise _refuse("webhook URLs must not carry credentials; authenticate with the signature")
    try:
        explicit = parts.port
    except ValueError as exc:
        raise _refuse("webhook URL has an invalid port") from exc
    # A local receiver on a random port is refused for its port before its address:
    # in development both refusals name the switch that lifts them.
    hint = _DEVELOPMENT_HINT if explain_private else ""
    port = _port(parts.scheme, explicit, allowed_ports, allow_private, hint)
    try:
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise _refuse(f"cannot resolve {parts.hostname!r}") from exc
    addresses = tuple(
        dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos)
    )
    if not addresses:
        raise _refuse(f"{parts.hostname!r} resolves to no address")
    if not allow_private:
        literal = _literal(parts.hostname)
        for address in addresses:
            kind = non_public_kind(address)
            if kind is None:
                continue
            # A literal is named; a name's addresses are not (they may be internal).
            where = f"{literal} is" if literal else f"{parts.hostname!r} resolves to"
            raise _refuse(f"{where} {kind}; {_PUBLIC_ONLY}{hint}")
    return ResolvedUrl(
        url=url, scheme=parts.scheme, host=parts.hostname, port=port, addresses=addresses
    )


def _literal(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None
