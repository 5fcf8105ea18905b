"""Tokenisation, SM4 field encryption and display masking (pure functions).

>>> mask_phone("13812345678")
'138****5678'
>>> mask_id_number("110101199003071234")
'110***********1234'
>>> tok = tokenize_pan("6214830012345678", key=b"k")
>>> len(tok), tok == tokenize_pan("6214830012345678", key=b"k")
(24, True)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


def tokenize_pan(pan: str, *, key: bytes) -> str:
    """Keyed token of a card number: HMAC-SHA256, base32, first 24 characters."""
    digest = hmac.new(key, pan.strip().encode(), hashlib.sha256).digest()
    return base64.b32encode(digest).decode()[:24]


def _sm4_key(key_hex: str) -> bytes:
    key = bytes.fromhex(key_hex)
    if len(key) != 16:
        raise ValueError("SM4 key must be 16 bytes (32 hex characters)")
    return key


def sm4_encrypt(plaintext: str, *, key_hex: str) -> str:
    """Encrypt with SM4-CBC and a random IV; returns base64(iv || ciphertext)."""
    iv = os.urandom(16)
    padder = padding.PKCS7(128).padder()
    data = padder.update(plaintext.encode()) + padder.finalize()
    enc = Cipher(algorithms.SM4(_sm4_key(key_hex)), modes.CBC(iv)).encryptor()
    return base64.b64encode(iv + enc.update(data) + enc.finalize()).decode()


def sm4_decrypt(token: str, *, key_hex: str) -> str:
    raw = base64.b64decode(token)
    iv, body = raw[:16], raw[16:]
    dec = Cipher(algorithms.SM4(_sm4_key(key_hex)), modes.CBC(iv)).decryptor()
    data = dec.update(body) + dec.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    return (unpadder.update(data) + unpadder.finalize()).decode()


def mask_phone(phone: str) -> str:
    p = phone.strip()
    if len(p) < 7:
        return "*" * len(p)
    return p[:3] + "*" * (len(p) - 7) + p[-4:]


def mask_id_number(id_number: str) -> str:
    s = id_number.strip()
    if len(s) < 8:
        return "*" * len(s)
    return s[:3] + "*" * (len(s) - 7) + s[-4:]


def mask_pan(pan: str) -> str:
    s = pan.strip()
    return s[:6] + "*" * max(len(s) - 10, 0) + s[-4:] if len(s) > 10 else "*" * len(s)
