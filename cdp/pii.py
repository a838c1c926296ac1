"""Field-level protection of personal data: AEAD encryption at rest and keyed blind indexes.

Both keys are derived from CDP_PII_KEY, which lives outside the database. A plain
hash of a phone number is not pseudonymisation (the whole CN mobile space hashes
in minutes), so lookups go through an HMAC keyed with a secret instead.

Key rotation: every ciphertext starts with the one-byte id of the key that made it.
The vault encrypts with its current key (CDP_PII_KEY, id CDP_PII_KEY_ID, default 1)
and decrypts with any key it holds (CDP_PII_DECRYPT_KEYS, ``id:secret`` pairs, comma
separated), so old and new keys both work while ``cdp privacy rotate-key`` re-encrypts.
Blind indexes are keyed hashes, not ciphertext: their key (CDP_PII_INDEX_KEY, default
CDP_PII_KEY) stays the same across a rotation so lookups never miss (docs/security.md).
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

KEY_ID = 1  # id of CDP_PII_KEY unless CDP_PII_KEY_ID says otherwise


def _derive(secret: str, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(
        secret.encode("utf-8")
    )


def parse_key_list(text: str | None) -> dict[int, str]:
    """``"1:old-secret,3:other"`` -> {1: "old-secret", 3: "other"}; ValueError if malformed."""
    keys: dict[int, str] = {}
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        key_id, sep, secret = part.partition(":")
        if not sep or not key_id.strip().isdigit() or not secret:
            raise ValueError("PII keys are listed as id:secret pairs separated by commas")
        keys[check_key_id(int(key_id))] = secret
    return keys


def check_key_id(key_id: int) -> int:
    if not 1 <= key_id <= 255:
        raise ValueError("a PII key id is a number from 1 to 255")
    return key_id


class PiiVault:
    """Encrypt, decrypt and blind-index personal data with keys derived from secrets."""

    def __init__(
        self,
        secret: str,
        key_id: int = KEY_ID,
        decrypt_keys: dict[int, str] | None = None,
        index_secret: str | None = None,
    ):
        self.key_id = check_key_id(key_id)
        self._secrets = {**(decrypt_keys or {}), key_id: secret}
        self._aeads = {
            kid: AESGCM(_derive(s, b"cdp/pii/encryption/v1")) for kid, s in self._secrets.items()
        }
        self.index_secret = index_secret or secret
        self._index_key = _derive(self.index_secret, b"cdp/pii/blind-index/v1")

    @property
    def key_ids(self) -> list[int]:
        return sorted(self._aeads)

    def secret_of(self, key_id: int) -> str:
        return self._secrets[key_id]

    def encrypt(self, plaintext: bytes, associated: bytes = b"") -> bytes:
        nonce = os.urandom(12)
        aead = self._aeads[self.key_id]
        return bytes([self.key_id]) + nonce + aead.encrypt(nonce, plaintext, associated)

    def decrypt(self, blob: bytes, associated: bytes = b"") -> bytes:
        aead = self._aeads.get(blob[0]) if blob else None
        if aead is None:
            raise ValueError("ciphertext was made with an unknown key")
        return aead.decrypt(blob[1:13], blob[13:], associated)

    def reencrypt(self, blob: bytes, associated: bytes = b"") -> bytes:
        """The same plaintext under the current key (``blob`` itself if it already is)."""
        if blob and blob[0] == self.key_id:
            return blob
        return self.encrypt(self.decrypt(blob, associated), associated)

    def encrypt_json(self, value, associated: bytes = b"") -> bytes:
        return self.encrypt(orjson.dumps(value), associated)

    def decrypt_json(self, blob: bytes, associated: bytes = b""):
        return orjson.loads(self.decrypt(blob, associated))

    def blind_index(self, kind: str, value: str) -> str:
        """Keyed, deterministic index of ``value`` for exact-match lookups."""
        message = kind.encode("utf-8") + b"\x00" + value.encode("utf-8")
        return hmac.new(self._index_key, message, hashlib.sha256).hexdigest()


def vault_from_config(app) -> PiiVault:
    """The vault the app's settings describe (parsed once by cdp.config.finalize).

    PII_KEY, PII_KEY_ID, PII_DECRYPT_KEYS ({id: secret}) and PII_INDEX_KEY (None: PII_KEY)
    come from CDP_PII_KEY, CDP_PII_KEY_ID, CDP_PII_DECRYPT_KEYS and CDP_PII_INDEX_KEY.
    """
    config = app.config
    return PiiVault(
        config["PII_KEY"],
        key_id=config.get("PII_KEY_ID") or KEY_ID,
        decrypt_keys=config.get("PII_DECRYPT_KEYS") or {},
        index_secret=config.get("PII_INDEX_KEY"),
    )


def init_app(app) -> None:
    app.extensions["cdp.pii"] = vault_from_config(app)


def vault() -> PiiVault:
    """The PII vault of the current app."""
    return current_app.extensions["cdp.pii"]
