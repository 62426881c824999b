"""Webhook TLS: one shared context that verifies every certificate, and a real HTTPS
send to the vetted address that checks the certificate against the URL's host name.

The live tests run the repository's test receiver (tests/receiver.py) over HTTPS with a
certificate from a throwaway CA, and give the sender a context that trusts that CA
instead of the public bundle.
"""

from __future__ import annotations

import datetime
import ssl
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from domain.services.webhooks import AttemptPlan, WebhookPolicy
from domain.webhook_signing import new_secret, sign
from domain.webhook_urls import resolve
from tests.receiver import running_receiver
from workers import webhook_sender


def test_the_shared_context_verifies_certificates_and_host_names() -> None:
    context = webhook_sender._shared_tls_context()
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname
    assert context.cert_store_stats()["x509_ca"] > 0  # a CA bundle is loaded


def test_every_thread_builds_its_clients_on_the_same_context() -> None:
    contexts: list[ssl.SSLContext] = []

    def build() -> None:
        client = webhook_sender._client_for(("https", "example.com", "93.184.216.34", 443))
        assert client._ssl_context is not None
        contexts.append(client._ssl_context)

    threads = [threading.Thread(target=build) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(contexts) == 4
    assert all(c is webhook_sender._shared_tls_context() for c in contexts)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    subject: str, issuer: str, public_key: Any, signing_key: Any, *, ca: bool, dns: str | None
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if dns is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(dns)]), critical=False
        )
    return builder.sign(signing_key, hashes.SHA256())


class ThrowawayCertificates:
    """A throwaway CA and a server certificate from it for `cert_name`, as files, and a
    server-side TLS context that records the SNI name each handshake asked for."""

    def __init__(self, tmp: Path, cert_name: str) -> None:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = _certificate("test CA", "test CA", ca_key.public_key(), ca_key, ca=True, dns=None)
        key = ec.generate_private_key(ec.SECP256R1())
        leaf = _certificate(cert_name, "test CA", key.public_key(), ca_key, ca=False, dns=cert_name)
        (tmp / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        (tmp / "leaf.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
        (tmp / "leaf.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        self.ca_file = tmp / "ca.pem"
        self.sni: list[str | None] = []
        self.server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.server_context.load_cert_chain(tmp / "leaf.pem", tmp / "leaf.key")
        self.server_context.sni_callback = lambda _sock, name, _ctx: self.sni.append(name)


@pytest.fixture
def trusting_sender(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The sender, with a TLS context that trusts the given CA (and fresh pools)."""

    def trust(ca_file: Path) -> None:
        context = ssl.create_default_context(cafile=str(ca_file))
        monkeypatch.setattr(webhook_sender, "_tls_context", context)
        monkeypatch.setattr(webhook_sender, "_local", threading.local())

    yield trust


POLICY = WebhookPolicy(
    allow_private=True, retry_schedule=[0], disable_after_seconds=60, secret_grace_seconds=60
)


def _plan(url: str, secret: str) -> AttemptPlan:
    return AttemptPlan(
        delivery_id=uuid.uuid4(),
        endpoint_id=uuid.uuid4(),
        url=f"{url}?x=1",
        msg_id="msg_tls",
        body=b'{"type":"transfer.succeeded"}',
        secrets=[secret],
    )


def _https_receiver(certificates: ThrowawayCertificates) -> Any:
    """The repository's test receiver (tests/receiver.py), over TLS, on the address the
    sender will vet for `localhost`."""
    address = resolve("https://localhost/", allow_private=True).addresses[0]
    return running_receiver(tls=certificates.server_context, address=str(address), host="localhost")


def test_an_https_delivery_goes_to_the_vetted_address_verified_for_the_host_name(
    tmp_path: Path, trusting_sender: Any
) -> None:
    secret = new_secret()
    certificates = ThrowawayCertificates(tmp_path, "localhost")
    with _https_receiver(certificates) as receiver:
        trusting_sender(certificates.ca_file)
        first = webhook_sender.send(_plan(receiver.url, secret), policy=POLICY, timeout=5)
        second = webhook_sender.send(_plan(receiver.url, secret), policy=POLICY, timeout=5)
    assert (first.status_code, first.error) == (200, None)
    assert (second.status_code, second.error) == (200, None)
    assert certificates.sni == ["localhost"]  # one handshake: the second send kept it alive
    request = receiver.requests[0]
    assert request.path == "/hooks?x=1"
    assert request.body == b'{"type":"transfer.succeeded"}'
    port = receiver.url.split(":")[2].split("/")[0]
    assert request.headers["host"] == f"localhost:{port}"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == webhook_sender.USER_AGENT
    timestamp = int(request.headers["webhook-timestamp"])
    assert request.headers["webhook-signature"] == sign(
        secret, msg_id="msg_tls", timestamp=timestamp, body=request.body
    )


def test_a_certificate_for_another_name_fails_the_attempt(
    tmp_path: Path, trusting_sender: Any
) -> None:
    certificates = ThrowawayCertificates(tmp_path, "elsewhere.test")
    with _https_receiver(certificates) as receiver:
        trusting_sender(certificates.ca_file)
        outcome = webhook_sender.send(_plan(receiver.url, new_secret()), policy=POLICY, timeout=5)
    assert outcome.status_code is None
    assert (outcome.error or "").startswith("ConnectError:")
    assert "certificate" in (outcome.error or "").lower()
    assert receiver.requests == []  # nothing was sent to a server that is not `localhost`
