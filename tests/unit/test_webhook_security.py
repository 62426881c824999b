"""SSRF policy for webhook URLs, and Standard Webhooks signatures checked independently."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import socket

import pytest

from domain.errors import InvalidRequest
from domain.secret_box import SecretBox
from domain.webhook_signing import new_secret, signature_header, verify
from domain.webhook_urls import is_public, resolve

REFUSED = [
    "http://127.0.0.1/hook",
    "http://[::1]/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://[::ffff:7f00:1]/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://10.0.0.1/hook",
    "http://192.168.1.10/hook",
    "http://172.16.0.5/hook",
    "http://100.64.0.1/hook",
    "http://0.0.0.0/hook",
    "http://2130706433/hook",  # decimal 127.0.0.1
    "http://0x7f000001/hook",  # hex 127.0.0.1
    "http://0177.0.0.1/hook",  # octal
    "http://localhost/hook",
    "http://[fe80::1]/hook",
    "http://[fc00::1]/hook",
    "http://224.0.0.1/hook",
    "file:///etc/passwd",
    "gopher://example.com/",
    "ftp://example.com/",
    "http://user:pw@93.184.216.34/hook",
    "http:///nohost",
]


@pytest.mark.parametrize("url", REFUSED)
def test_non_public_destinations_are_refused_by_default(url):
    with pytest.raises(InvalidRequest) as exc:
        resolve(url, allow_private=False)
    assert exc.value.code == "webhook_url_not_allowed"


def test_a_hostname_resolving_to_a_private_address_is_refused(monkeypatch):
    def fake_dns(host, port, *args, **kwargs):  # DNS is the untrusted input here
        assert host == "hooks.attacker.example"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.1.2.3", port))]

    monkeypatch.setattr(socket, "getaddrinfo", fake_dns)
    with pytest.raises(InvalidRequest):
        resolve("https://hooks.attacker.example/x", allow_private=False)


def test_one_private_address_among_public_ones_is_enough_to_refuse(monkeypatch):
    def fake_dns(host, port, *args, **kwargs):
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", fake_dns)
    with pytest.raises(InvalidRequest):
        resolve("https://mixed.example/x", allow_private=False)


def test_public_addresses_pass_and_the_dev_switch_lifts_the_guard():
    resolved = resolve("https://93.184.216.34:8443/hook", allow_private=False)
    assert resolved.port == 8443 and str(resolved.addresses[0]) == "93.184.216.34"
    assert resolve("http://127.0.0.1:9/x", allow_private=True).addresses


@pytest.mark.parametrize("address", ["8.8.8.8", "2606:4700:4700::1111"])
def test_is_public(address):
    assert is_public(ipaddress.ip_address(address))


# Issue 10, finding 9: `http://[fec0::1]/` was accepted (ipaddress before Python 3.12.4
# calls site-local space global), and so were the other IPv6 forms below marked "new".
NON_GLOBAL_IPV6 = {
    "fec0::1": "site-local",  # new: deprecated site-local, fec0::/10
    "feff::1": "site-local",  # new: top of fec0::/10
    "fc00::1": "unique-local",
    "fd12:3456::1": "unique-local",
    "fe80::1": "link-local",
    "febf::1": "link-local",
    "::": "unspecified",
    "::1": "loopback",
    "ff02::1": "multicast",
    "100::1": "discard-only",
    "2001:db8::1": "documentation",
    "2001:db8:ffff::1": "documentation",
    "3fff::1": "documentation",  # new: RFC 9637
    "2001::1": "Teredo",
    "2001:0:4136:e378:8000:63bf:3fff:fdd2": "Teredo",  # new: a real-looking Teredo form
    "2001:2::1": "IETF protocol assignment",
    "2001:10::1": "IETF protocol assignment",
    "2002:7f00:1::1": "6to4 form of a loopback",  # 127.0.0.1
    "2002:a00:1::1": "6to4 form of a private",  # new: 10.0.0.1
    "2002:c0a8:101::": "6to4 form of a private",  # new: 192.168.1.1
    "2002:a9fe:a9fe::1": "6to4 form of a link-local",  # new: 169.254.169.254
    "64:ff9b::a00:1": "NAT64 form of a private",  # new: 10.0.0.1
    "64:ff9b::7f00:1": "NAT64 form of a loopback",  # new: 127.0.0.1
    "64:ff9b::a9fe:a9fe": "NAT64 form of a link-local",  # new: 169.254.169.254
    "64:ff9b:1::a00:1": "local-use NAT64",  # new: RFC 8215
    "::ffff:127.0.0.1": "IPv4-mapped",
    "::ffff:8.8.8.8": "IPv4-mapped",  # new: refused even when public (write 8.8.8.8)
    "::127.0.0.1": "IPv4-compatible",
    "::8.8.8.8": "IPv4-compatible",  # new: deprecated form
    "5f00::1": "outside the global unicast range",  # new: SRv6 SIDs, RFC 9602
    "4000::1": "outside the global unicast range",  # new
}
NON_GLOBAL_IPV4 = {
    "0.1.2.3": "unspecified",
    "10.255.0.1": "private",
    "100.127.255.254": "carrier-grade NAT",
    "127.0.0.2": "loopback",
    "169.254.169.254": "link-local",
    "172.31.255.255": "private",
    "192.0.0.8": "IETF protocol assignment",
    "192.0.2.1": "documentation",
    "192.88.99.1": "6to4 relay",  # new: deprecated anycast relays
    "192.168.0.1": "private",
    "198.19.0.1": "benchmarking",
    "198.51.100.7": "documentation",
    "203.0.113.9": "documentation",
    "239.255.255.250": "multicast",
    "240.0.0.1": "reserved",
    "255.255.255.255": "reserved",
}


@pytest.mark.parametrize(("address", "kind"), {**NON_GLOBAL_IPV6, **NON_GLOBAL_IPV4}.items())
def test_every_non_public_form_is_refused_and_named(address, kind):
    assert not is_public(ipaddress.ip_address(address))
    literal = f"[{address}]" if ":" in address else address
    with pytest.raises(InvalidRequest) as exc:
        resolve(f"https://{literal}/hook", allow_private=False)
    assert exc.value.code == "webhook_url_not_allowed"
    assert kind in exc.value.detail
    assert "must point at a public internet address" in exc.value.detail
    assert "SETTLE_WEBHOOK_ALLOW_PRIVATE" not in exc.value.detail


@pytest.mark.parametrize(
    "address",
    [
        "2606:4700:4700::1111",
        "2a00:1450:4001:80b::200e",
        "2002:5db8:d822::1",  # 6to4 of 93.184.216.34
        "64:ff9b::5db8:d822",  # NAT64 (DNS64 networks) of 93.184.216.34
        "93.184.216.34",
    ],
)
def test_public_forms_pass(address):
    assert is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("port", [0, 1, 22, 25, 5432, 6379, 8000, 9200, 11211, 65535])
def test_ports_outside_the_allowlist_are_refused(port):
    """Issue 10, finding 9: any port was allowed (`:6379`, `:0`)."""
    with pytest.raises(InvalidRequest) as exc:
        resolve(f"http://93.184.216.34:{port}/hook", allow_private=False)
    assert exc.value.code == "webhook_url_not_allowed"
    assert f"port {port}" in exc.value.detail


@pytest.mark.parametrize(
    "url",
    ["http://93.184.216.34/", "https://93.184.216.34/"]
    + [f"https://93.184.216.34:{port}/" for port in (80, 443, 8080, 8443)],
)
def test_default_ports_pass(url):
    assert resolve(url, allow_private=False).addresses


def test_the_port_allowlist_is_configurable_and_explains_itself():
    resolved = resolve(
        "https://93.184.216.34:9443/", allow_private=False, allowed_ports={443, 9443}
    )
    assert resolved.port == 9443
    with pytest.raises(InvalidRequest) as exc:
        resolve("https://93.184.216.34/", allow_private=False, allowed_ports={9443})
    assert exc.value.detail == "webhook URLs may only use ports 9443; port 443 is not allowed"
    with pytest.raises(InvalidRequest) as exc:
        resolve("http://93.184.216.34:99999/", allow_private=False)
    assert "invalid port" in exc.value.detail


def test_the_development_switch_lifts_the_port_list_but_never_port_zero():
    assert resolve("http://127.0.0.1:6379/x", allow_private=True).port == 6379
    with pytest.raises(InvalidRequest) as exc:
        resolve("http://127.0.0.1:0/x", allow_private=True)
    assert "port 0" in exc.value.detail


def test_in_development_a_refusal_names_the_switch_that_lifts_it():
    with pytest.raises(InvalidRequest) as exc:
        resolve("http://[fec0::1]/hook", allow_private=False, explain_private=True)
    assert "SETTLE_WEBHOOK_ALLOW_PRIVATE=true" in exc.value.detail
    assert "never set it in production" in exc.value.detail


def test_a_name_is_refused_without_revealing_the_internal_address(monkeypatch):
    def fake_dns(host, port, *args, **kwargs):
        return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("fd00:ec2::254", port, 0, 0))]

    monkeypatch.setattr(socket, "getaddrinfo", fake_dns)
    with pytest.raises(InvalidRequest) as exc:
        resolve("https://hooks.example/x", allow_private=False)
    assert exc.value.detail.startswith("'hooks.example' resolves to a unique-local")
    assert "fd00" not in exc.value.detail


def _reference_signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def test_signature_matches_the_standard_webhooks_construction():
    secret = new_secret()
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) >= 24
    body = b'{"type":"transfer.succeeded"}'
    header = signature_header([secret], msg_id="evt_1", timestamp=1700000000, body=body)
    assert header == _reference_signature(secret, "evt_1", 1700000000, body)
    assert verify(secret, msg_id="evt_1", timestamp=1700000000, body=body, header=header)
    assert not verify(secret, msg_id="evt_1", timestamp=1700000001, body=body, header=header)


def test_rotation_signs_with_both_secrets():
    old, new = new_secret(), new_secret()
    header = signature_header([new, old], msg_id="m", timestamp=1, body=b"{}")
    assert verify(old, msg_id="m", timestamp=1, body=b"{}", header=header)
    assert verify(new, msg_id="m", timestamp=1, body=b"{}", header=header)


def test_secrets_are_encrypted_at_rest():
    box = SecretBox("k" * 40)
    sealed = box.seal("whsec_abc")
    assert b"whsec_abc" not in sealed and box.open(sealed) == "whsec_abc"
    with pytest.raises(Exception):  # noqa: B017 - any failure: a dump alone is useless
        SecretBox("another key entirely!!!!!!!!!!!!!!").open(sealed)
