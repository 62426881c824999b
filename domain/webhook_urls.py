"""Which webhook URLs Settle will call: the SSRF policy.

Only http and https; the host is resolved and *every* address it resolves to must be
public (not loopback, private, link-local, multicast, reserved, unspecified, shared
CGNAT space, or an IPv4-mapped/compat form of those). Checked at registration and again
at delivery, where the sender connects to exactly the address it checked (no second DNS
lookup), so DNS rebinding cannot swap in an internal address in between.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from domain.errors import InvalidRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class ResolvedUrl:
    url: str
    scheme: str
    host: str
    port: int
    addresses: tuple[IPAddress, ...]


def _refuse(detail: str) -> InvalidRequest:
    return InvalidRequest(detail, code="webhook_url_not_allowed")


def is_public(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        embedded = (
            address.ipv4_mapped
            or address.sixtofour
            or (address.teredo[1] if address.teredo else None)
        )
        if embedded is not None:
            return is_public(embedded)
        if address in ipaddress.ip_network("::/96"):  # IPv4-compatible (deprecated) form
            return is_public(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return bool(
        address.is_global
        and not address.is_multicast
        and not address.is_reserved
        and not address.is_loopback
        and not address.is_link_local
        and not address.is_private
        and not address.is_unspecified
    )


def resolve(url: str, *, allow_private: bool) -> ResolvedUrl:
    """Parse, resolve and vet `url`; raises InvalidRequest(webhook_url_not_allowed)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise _refuse("webhook URLs must use http or https")
    if not parts.hostname:
        raise _refuse("webhook URL has no host")
    if parts.username or parts.password:
        raise _refuse("webhook URLs must not carry credentials")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise _refuse("webhook URL has an invalid port") from exc
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
        for address in addresses:
            if not is_public(address):
                raise _refuse(f"{parts.hostname!r} resolves to a non-public address")
    return ResolvedUrl(
        url=url, scheme=parts.scheme, host=parts.hostname, port=port, addresses=addresses
    )
