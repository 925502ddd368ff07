"""Encryption at rest for the write-ahead log (OTELGW_WAL_ENCRYPTION_KEY): each record's request
bytes are sealed with AES-256-GCM, the record's sequence number as associated data (a record
cannot be moved to another position unnoticed). The key is derived from the configured secret
with PBKDF2-HMAC-SHA256. Framing, sequence numbers and CRCs stay readable, so recovery and
torn-tail detection work without the key; the request bytes do not.
"""

from __future__ import annotations

import hashlib
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

# Never the start of an OTLP protobuf request (0x4f: field 9, wire type 7, which does not exist).
MAGIC = b"OGE1"
_NONCE = 12
_SALT = b"otelgw-wal-v1"


class WalDecryptError(ValueError):
    pass


def is_sealed(request: bytes) -> bool:
    return request[:4] == MAGIC


class WalCipher:
    def __init__(self, secret: str) -> None:
        if len(secret) < 16:
            raise ValueError("wal_encryption_key must be at least 16 characters")
        self._aead = AESGCM(hashlib.pbkdf2_hmac("sha256", secret.encode(), _SALT, 200_000))

    def seal(self, seq: int, request: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        return MAGIC + nonce + self._aead.encrypt(nonce, request, seq.to_bytes(8, "big"))

    def open(self, seq: int, sealed: bytes) -> bytes:
        nonce = sealed[len(MAGIC):len(MAGIC) + _NONCE]
        try:
            return self._aead.decrypt(nonce, sealed[len(MAGIC) + _NONCE:], seq.to_bytes(8, "big"))
        except InvalidTag as exc:
            raise WalDecryptError(f"write-ahead log record {seq} does not decrypt: wrong "
                                  "OTELGW_WAL_ENCRYPTION_KEY, or the record was altered") from exc
