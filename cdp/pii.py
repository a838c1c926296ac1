"""Field-level protection of personal data: AEAD encryption at rest and keyed blind indexes.

Both keys are derived from CDP_PII_KEY, which lives outside the database. A plain
hash of a phone number is not pseudonymisation (the whole CN mobile space hashes
in minutes), so lookups go through an HMAC keyed with a secret instead.
"""

from __future__ import annotations

import hashlib
import hmac
import os

import orjson
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import current_app

KEY_ID = 1  # bumped on rotation; the first byte of every ciphertext names its key


def _derive(secret: str, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(
        secret.encode("utf-8")
    )


class PiiVault:
    """Encrypt, decrypt and blind-index personal data with keys derived from one secret."""

    def __init__(self, secret: str):
        self._aead = AESGCM(_derive(secret, b"cdp/pii/encryption/v1"))
        self._index_key = _derive(secret, b"cdp/pii/blind-index/v1")

    def encrypt(self, plaintext: bytes, associated: bytes = b"") -> bytes:
        nonce = os.urandom(12)
        return bytes([KEY_ID]) + nonce + self._aead.encrypt(nonce, plaintext, associated)

    def decrypt(self, blob: bytes, associated: bytes = b"") -> bytes:
        if not blob or blob[0] != KEY_ID:
            raise ValueError("ciphertext was made with an unknown key")
        return self._aead.decrypt(blob[1:13], blob[13:], associated)

    def encrypt_json(self, value, associated: bytes = b"") -> bytes:
        return self.encrypt(orjson.dumps(value), associated)

    def decrypt_json(self, blob: bytes, associated: bytes = b""):
        return orjson.loads(self.decrypt(blob, associated))

    def blind_index(self, kind: str, value: str) -> str:
        """Keyed, deterministic index of ``value`` for exact-match lookups."""
        message = kind.encode("utf-8") + b"\x00" + value.encode("utf-8")
        return hmac.new(self._index_key, message, hashlib.sha256).hexdigest()


def init_app(app) -> None:
    app.extensions["cdp.pii"] = PiiVault(app.config["PII_KEY"])


def vault() -> PiiVault:
    """The PII vault of the current app."""
    return current_app.extensions["cdp.pii"]
