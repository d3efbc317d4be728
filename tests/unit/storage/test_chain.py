"""storage.chain: the keyed link, and the fast HMAC the verifier uses, are one function."""

import hmac
import os

import pytest

from storage.chain import GENESIS, KeyedHash, canonical, link


@pytest.mark.parametrize("key_length", [1, 32, 63, 64, 65, 200])
def test_the_verifiers_hmac_is_hmac_sha256(key_length):
    key = os.urandom(key_length)
    keyed = KeyedHash(key)
    for size in (0, 1, 55, 64, 119, 1000):
        data = os.urandom(size)
        assert keyed(data) == hmac.digest(key, data, "sha256")


def test_a_link_with_a_key_is_its_hmac_and_without_one_plain_sha256():
    body = canonical(1, "2026-12-04T12:00:00.000000Z", "U0A", "test", "x", "{}")
    key = b"k" * 32
    assert link(GENESIS, body, key) == KeyedHash(key)(bytes(32) + body).hex()
    assert link(GENESIS, body, None) != link(GENESIS, body, key)
    assert link(GENESIS, body, key) != link(GENESIS, body, b"K" * 32)
