"""Personal data protection: authenticated encryption and keyed blind indexes."""

import hashlib

import pytest
from cryptography.exceptions import InvalidTag

from cdp.pii import PiiVault


def test_encryption_round_trips_and_is_randomised():
    vault = PiiVault("key-one")
    a = vault.encrypt_json({"name": "张伟", "phone": "+8613800138000"}, b"profile")
    b = vault.encrypt_json({"name": "张伟", "phone": "+8613800138000"}, b"profile")
    assert a != b  # fresh nonce each time
    assert vault.decrypt_json(a, b"profile") == {"name": "张伟", "phone": "+8613800138000"}
    assert "张伟".encode() not in a


def test_ciphertext_cannot_be_moved_to_another_context_or_tampered_with():
    vault = PiiVault("key-one")
    blob = vault.encrypt(b"+8613800138000", b"src_1")
    with pytest.raises(InvalidTag):
        vault.decrypt(blob, b"src_2")
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(InvalidTag):
        vault.decrypt(tampered, b"src_1")


def test_wrong_key_cannot_decrypt():
    blob = PiiVault("key-one").encrypt(b"secret")
    with pytest.raises(InvalidTag):
        PiiVault("key-two").decrypt(blob)


def test_blind_index_is_keyed_not_a_plain_hash():
    phone = "+8613800138000"
    one, two = PiiVault("key-one"), PiiVault("key-two")
    assert one.blind_index("phone", phone) == one.blind_index("phone", phone)
    assert one.blind_index("phone", phone) != two.blind_index("phone", phone)
    assert one.blind_index("phone", phone) != one.blind_index("email", phone)
    assert one.blind_index("phone", phone) != hashlib.sha256(phone.encode()).hexdigest()
