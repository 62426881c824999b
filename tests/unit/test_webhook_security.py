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
