"""Encryption at rest for webhook secrets (Fernet: AES-128-CBC + HMAC-SHA256).

The key comes from settings, never from the database, so a database dump alone
cannot be used to forge Settle's webhook signatures.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet


class SecretBox:
    def __init__(self, key: str) -> None:
        # Any passphrase works: it is stretched to a Fernet key with SHA-256.
        digest = hashlib.sha256(key.encode()).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(digest))

    def seal(self, plaintext: str) -> bytes:
        return self._fernet.encrypt(plaintext.encode())

    def open(self, ciphertext: bytes) -> str:
        return self._fernet.decrypt(ciphertext).decode()
