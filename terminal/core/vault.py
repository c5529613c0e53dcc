"""Secrets at rest: the journal's sealing key, sealed messages and the keyed PAN hash.

A message kept for resend (a refund advice, a reversal, a request a batch upload
repeats) holds a full PAN and maybe track data, so it is sealed with AES-GCM
under a key kept in a file only the terminal's user can read (mode 0600). A real
terminal keeps that key in its secure element; the file stands in for it.

PANs are never stored in the clear: rows keep the masked PAN for people and an
HMAC-SHA256 of the PAN under a second key for the same-card check.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from terminal.core.errors import JournalError

KEY_FILE = "journal.key"
_KEY_LEN = 64  # 32 bytes AES-256-GCM key + 32 bytes PAN-hash key
_NONCE_LEN = 12
_VERSION = b"\x01"


class Vault:
    """Seals and opens blobs and hashes PANs with the keys of one data directory."""

    def __init__(self, material: bytes) -> None:
        if len(material) != _KEY_LEN:
            raise JournalError("journal key file has the wrong length")
        self._aead = AESGCM(material[:32])
        self._pan_key = material[32:]

    @classmethod
    def open(cls, data_dir: Path) -> Vault:
        """Load the key file of ``data_dir``, creating it (mode 0600) the first time."""
        path = data_dir / KEY_FILE
        if not path.exists():
            data_dir.mkdir(parents=True, exist_ok=True)
            material = os.urandom(_KEY_LEN)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, material)
                os.fsync(fd)
            finally:
                os.close(fd)
            return cls(material)
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise JournalError(f"{path} is readable by others (mode {mode:o}); "
                               "it must be 0600", cashier_zh="密钥文件权限错误",
                               cashier_en="Key file permissions are wrong")
        return cls(path.read_bytes())

    def seal(self, plain: bytes, *, context: bytes = b"") -> bytes:
        """AES-GCM: version | nonce | ciphertext+tag; ``context`` is bound as associated data."""
        nonce = os.urandom(_NONCE_LEN)
        return _VERSION + nonce + self._aead.encrypt(nonce, plain, context)

    def open_sealed(self, sealed: bytes, *, context: bytes = b"") -> bytes:
        if len(sealed) < 1 + _NONCE_LEN + 16 or sealed[:1] != _VERSION:
            raise JournalError("sealed record is damaged")
        nonce = sealed[1:1 + _NONCE_LEN]
        try:
            return self._aead.decrypt(nonce, sealed[1 + _NONCE_LEN:], context)
        except InvalidTag:
            raise JournalError("sealed record fails its integrity check") from None

    def pan_hash(self, pan: str) -> str:
        """Keyed hash of a PAN: equal for the same card, useless without the key."""
        return hmac.new(self._pan_key, pan.encode("ascii"), hashlib.sha256).hexdigest()
