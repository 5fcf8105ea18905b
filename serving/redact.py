"""Personal data in responses and logs: masking by scope, and a log filter that redacts what slips through.

>>> redact("call 13812345678 about 110101199003071234, key fck_abcdefghijklmnopqrstuvwxyz")
'call 138****5678 about 110***********1234, key fck_[REDACTED]'
"""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Iterable, Mapping
from typing import Any

from fuelcard.privacy import mask_id_number, mask_phone, sm4_decrypt

_PHONE = re.compile(r"(?<!\d)(1[3-9]\d)(\d{4})(\d{4})(?!\d)")
_ID_NUMBER = re.compile(r"(?<![\dA-Za-z])(\d{3})(\d{11})(\d{3}[\dXx])(?![\dA-Za-z])")
_PAN = re.compile(r"(?<!\d)(\d{6})(\d{6,9})(\d{4})(?!\d)")
_KEYS = re.compile(r"\b(fck_|demo_[a-z_]+?_)[A-Za-z0-9_\-]{6,}")
_BEARER = re.compile(r"(?i)(bearer\s+|x-api-key[\"':= ]+)[^\s,;\"']+")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Mask phone numbers, ID numbers, card numbers, API keys and the given secret strings in ``text``."""
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, "[REDACTED]")
    text = _KEYS.sub(lambda m: m.group(1) + "[REDACTED]", text)
    text = _BEARER.sub(lambda m: m.group(1) + "[REDACTED]", text)
    text = _ID_NUMBER.sub(lambda m: m.group(1) + "*" * 11 + m.group(3)[-4:], text)
    text = _PAN.sub(lambda m: m.group(1) + "*" * len(m.group(2)) + m.group(3), text)
    text = _PHONE.sub(lambda m: m.group(1) + "****" + m.group(3), text)
    return text


class RedactingFilter(logging.Filter):
    """A logging filter that rewrites every record's message through :func:`redact`.

    Installed on the root logger and uvicorn's loggers by :func:`install_log_filter`, so neither our code nor a
    library can write a phone number, an ID number, a card number, an API key or a configured secret to a log.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__("redact")
        self.secrets = tuple(s for s in secrets if s)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record must not break logging
            message = str(record.msg)
        clean = redact(message, self.secrets)
        record.msg, record.args = clean, None
        if getattr(record, "_redacted", False):
            return True
        if record.exc_info and record.exc_info[1] is not None:
            # Exception messages can carry request values: keep the traceback, redacted like the message.
            text = "".join(traceback.format_exception(*record.exc_info))
            record.exc_text = redact(text.rstrip("\n"), self.secrets)
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        record._redacted = True  # type: ignore[attr-defined]
        return True


LOGGERS = ("", "uvicorn", "uvicorn.error", "uvicorn.access", "fastapi", "serving")


def install_log_filter(secrets: Iterable[str] = ()) -> RedactingFilter:
    """Attach one :class:`RedactingFilter` to the root and server loggers and their handlers (idempotent)."""
    flt = RedactingFilter(secrets)
    _install_factory(flt)
    for name in LOGGERS:
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, RedactingFilter)]:
            logger.removeFilter(old)
        logger.addFilter(flt)
        for handler in logger.handlers:
            for old in [f for f in handler.filters if isinstance(f, RedactingFilter)]:
                handler.removeFilter(old)
            handler.addFilter(flt)
    return flt


_FACTORY_STATE: dict[str, Any] = {}


def _install_factory(flt: RedactingFilter) -> None:
    """Redact every log record of the process when it is created, whichever logger or handler it goes to
    (filters on loggers do not see records propagated from child loggers; the record factory does)."""
    _FACTORY_STATE["filter"] = flt
    if "base" in _FACTORY_STATE:
        return
    base = logging.getLogRecordFactory()
    _FACTORY_STATE["base"] = base

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = base(*args, **kwargs)
        _FACTORY_STATE["filter"].filter(record)
        return record

    logging.setLogRecordFactory(factory)


PII_FIELDS = {"phone_enc": ("phone", mask_phone), "id_number_enc": ("id_number", mask_id_number)}


def reveal(contact: Mapping[str, Any], *, unmasked: bool, sm4_key_hex: str) -> dict[str, str | None]:
    """Decrypt a member's encrypted personal fields and mask them unless ``unmasked``.

    Input keys ``phone_enc``/``id_number_enc`` (SM4 ciphertext from the warehouse) or already-plain
    ``phone``/``id_number``; output keys ``phone``/``id_number``.
    """
    out: dict[str, str | None] = {}
    for enc_field, (plain_field, masker) in PII_FIELDS.items():
        value = contact.get(enc_field)
        plain: str | None = None
        if value:
            try:
                plain = sm4_decrypt(str(value), key_hex=sm4_key_hex)
            except Exception:  # noqa: BLE001 - wrong key or corrupt value: show nothing rather than fail
                plain = None
        elif contact.get(plain_field):
            plain = str(contact[plain_field])
        out[plain_field] = None if plain is None else (plain if unmasked else masker(plain))
    return out
