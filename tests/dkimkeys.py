"""DKIM test keys made at run time, and the shared fixtures that serve them over a stub DNS.

``keys``/``auth`` (module scope): the approvers' ``company.test`` key and an attacker's
``evil.test`` key (1024 bits), published as ``sel._domainkey.<domain>`` by tests/dnsstub.py;
registered for every test module by tests/conftest.py. test_auth.py and test_spoofing.py
define their own ``keys`` for their cases.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from daemon.auth import AuthSettings
from tests.dnsstub import StubDNS


@dataclass(frozen=True)
class Key:
    pem: bytes  # PKCS#1, what dkim.sign wants
    record: bytes  # the TXT record


def make_key(bits: int) -> Key:
    """An RSA key: cryptography when importable (>= 1024 bits), else openssl."""
    try:
        if bits < 1024:
            raise ImportError  # cryptography refuses small keys; openssl still makes them
        from cryptography.hazmat.primitives import serialization as ser
        from cryptography.hazmat.primitives.asymmetric import rsa

        private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        pem = private.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.TraditionalOpenSSL,
                                    ser.NoEncryption())
        der = private.public_key().public_bytes(ser.Encoding.DER,
                                                ser.PublicFormat.SubjectPublicKeyInfo)
    except ImportError:
        if shutil.which("openssl") is None:
            pytest.skip("neither cryptography nor openssl available to make RSA keys")
        pem = subprocess.run(["openssl", "genrsa", "-traditional", str(bits)], check=True,
                             capture_output=True).stdout
        der = subprocess.run(["openssl", "rsa", "-pubout", "-outform", "DER"], input=pem,
                             check=True, capture_output=True).stdout
    return Key(pem, b"v=DKIM1; k=rsa; p=" + base64.b64encode(der))


@pytest.fixture(scope="module")
def keys() -> dict[str, Key]:
    return {"company": make_key(2048), "evil": make_key(1024)}


@pytest.fixture(scope="module")
def auth(keys: dict[str, Key]) -> Iterator[AuthSettings]:
    with StubDNS({"sel._domainkey.company.test": keys["company"].record,
                  "sel._domainkey.evil.test": keys["evil"].record}) as server:
        yield AuthSettings(nameservers=(server.address,), dns_timeout=2.0)
