"""Webhook clients share one TLS context, and it still verifies every certificate."""

from __future__ import annotations

import ssl
import threading

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
        contexts.append(client._transport._pool._ssl_context)  # type: ignore[attr-defined]

    threads = [threading.Thread(target=build) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(contexts) == 4
    assert all(c is webhook_sender._shared_tls_context() for c in contexts)
