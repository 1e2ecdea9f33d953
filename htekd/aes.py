"""AES-128-CBC as Htek phones decrypt it, byte for byte what `openssl enc -aes-128-cbc` writes.

The equivalent command is

    openssl enc -aes-128-cbc -K <key> -iv 0B1E1D000F0B07091D1F04071F1E0407 -in IN -out OUT

(add -d to decrypt): PKCS#7 padding, no "Salted__" header, the fixed IV below. Messages never
contain the key.
"""

from __future__ import annotations

import string

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

# Fixed by the phone firmware; a file encrypted with any other IV does not decrypt on the phone.
IV = bytes.fromhex("0B1E1D000F0B07091D1F04071F1E0407")

BLOCK_SIZE = 16
# The phone's "Common AES Key" (P8631) takes at most 16 hex digits, although openssl takes 32.
MAX_KEY_DIGITS = 16

_HEX_DIGITS = frozenset(string.hexdigits)
_UTF8_BOM = b"\xef\xbb\xbf"


class InvalidKey(ValueError):
    """A key the phone cannot take; str() says why without repeating the key."""


class DecryptError(ValueError):
    """Data that does not decrypt with the key; str() is one line for the user."""


def parse_key(text: str) -> bytes:
    """The 16 key bytes `openssl enc -aes-128-cbc -K <text>` uses.

    openssl reads the hex digits left to right into a zeroed 16-byte buffer: an odd digit count
    gets a trailing "0" and a short key is padded with zero bytes on the right.
    """
    if not text:
        raise InvalidKey("expected 1 to 16 hex digits (0-9, A-F), got an empty key")
    for position, char in enumerate(text, 1):
        if char not in _HEX_DIGITS:
            raise InvalidKey(f"expected hex digits only (0-9, A-F), character {position} is not one")
    if len(text) > MAX_KEY_DIGITS:
        raise InvalidKey(f"expected at most {MAX_KEY_DIGITS} hex digits (the phone's limit), got {len(text)}")
    digits = text if len(text) % 2 == 0 else text + "0"
    return bytes.fromhex(digits).ljust(BLOCK_SIZE, b"\0")


def _cipher(key: str) -> Cipher:
    return Cipher(algorithms.AES(parse_key(key)), modes.CBC(IV))


def encrypt(data: bytes, key: str) -> bytes:
    """`data` encrypted for the phone: PKCS#7 padded (an empty input gives one block)."""
    padder = padding.PKCS7(BLOCK_SIZE * 8).padder()
    encryptor = _cipher(key).encryptor()
    padded = padder.update(data) + padder.finalize()
    return encryptor.update(padded) + encryptor.finalize()


def decrypt(data: bytes, key: str) -> bytes:
    """The plaintext of `data`; DecryptError when it cannot be an encryption with `key`."""
    if not data:
        raise DecryptError("empty input: an encrypted file has at least 16 bytes")
    if len(data) % BLOCK_SIZE:
        raise DecryptError(
            f"length {len(data)} is not a multiple of {BLOCK_SIZE} bytes: truncated or not an encrypted file"
        )
    decryptor = _cipher(key).decryptor()
    padded = decryptor.update(data) + decryptor.finalize()
    unpadder = padding.PKCS7(BLOCK_SIZE * 8).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        raise DecryptError("bad padding: wrong key or not an encrypted file") from None


def looks_like_xml(data: bytes) -> bool:
    """Whether `data` starts like an XML document: optional UTF-8 BOM and whitespace, then "<".

    A wrong key still yields valid padding about once in 256 tries; this catches that garbage.
    """
    if data.startswith(_UTF8_BOM):
        data = data[len(_UTF8_BOM):]
    return data.lstrip(b" \t\r\n").startswith(b"<")
