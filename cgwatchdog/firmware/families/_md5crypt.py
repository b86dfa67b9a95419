"""md5-crypt, the ``$1$`` password hash (Poul-Henning Kamp, FreeBSD 1994), for Whatsminer.

Whatsminer's API v2 derives its keys from the hash part of md5-crypt (what ``openssl
passwd -1 -salt <salt> <password>`` prints after the third ``$``). The standard library's
``crypt`` module is deprecated and gone in Python 3.13, and passlib is unmaintained, so
this is the published algorithm, written out: an MD5 of password, magic and salt mixed
with an MD5 of password-salt-password, then 1000 rounds that stir password, salt and the
previous digest, and a custom base-64 of the digest's bytes in a fixed order.

Tests check it against published vectors (glibc/libxcrypt, FreeBSD libcrypt, passlib's
John-the-Ripper set, musl's self-test).
"""

from __future__ import annotations

import hashlib
from typing import Final

__all__ = ["md5_crypt", "md5_crypt_hash"]

MAGIC: Final = b"$1$"
MAX_SALT_CHARS: Final = 8
ROUNDS: Final = 1000
_ALPHABET: Final = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# The digest's bytes, three at a time, in the order the scheme encodes them (the last
# group is the single byte 11).
_GROUPS: Final = ((0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5))


def _as_bytes(value: bytes | str) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def _salt_of(salt: bytes) -> bytes:
    """The salt proper: without a leading ``$1$``, up to a ``$``, at most 8 characters."""
    if salt.startswith(MAGIC):
        salt = salt[len(MAGIC) :]
    return salt.split(b"$", 1)[0][:MAX_SALT_CHARS]


def _encode(value: int, chars: int) -> bytes:
    out = bytearray()
    for _ in range(chars):
        out.append(_ALPHABET[value & 0x3F])
        value >>= 6
    return bytes(out)


def md5_crypt_hash(password: bytes | str, salt: bytes | str) -> str:
    """The 22-character hash part of md5-crypt(``password``, ``salt``)."""
    pw = _as_bytes(password)
    salt_bytes = _salt_of(_as_bytes(salt))
    alternate = hashlib.md5(pw + salt_bytes + pw).digest()
    context = hashlib.md5(pw + MAGIC + salt_bytes)
    remaining = len(pw)
    while remaining > 0:
        context.update(alternate[: min(16, remaining)])
        remaining -= 16
    # For each bit of the password's length, low bit first: a NUL for a one, the
    # password's first byte for a zero (a quirk of the original, kept by everyone).
    length = len(pw)
    while length:
        context.update(b"\0" if length & 1 else pw[:1])
        length >>= 1
    digest = context.digest()
    for round_number in range(ROUNDS):
        stir = hashlib.md5(pw if round_number & 1 else digest)
        if round_number % 3:
            stir.update(salt_bytes)
        if round_number % 7:
            stir.update(pw)
        stir.update(digest if round_number & 1 else pw)
        digest = stir.digest()
    encoded = b"".join(
        _encode((digest[a] << 16) | (digest[b] << 8) | digest[c], 4) for a, b, c in _GROUPS
    )
    return (encoded + _encode(digest[11], 2)).decode("ascii")


def md5_crypt(password: bytes | str, salt: bytes | str) -> str:
    """The whole ``$1$<salt>$<hash>`` string, as crypt(3) and ``openssl passwd -1`` give it."""
    salt_bytes = _salt_of(_as_bytes(salt))
    return f"$1${salt_bytes.decode('ascii', 'replace')}${md5_crypt_hash(password, salt_bytes)}"
