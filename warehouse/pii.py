"""Sensitive fields on their way into and out of the warehouse.

* member ``id_number`` / ``phone``: SM4-encrypted (``fuelcard.privacy.sm4_encrypt``, key from settings) into
  ``*_enc`` columns, plus display masks (``138****5678``) computed before encryption; the raw values are
  dropped from the frame and never stored or logged;
* card numbers: only tokens (keyed HMAC). A value that looks like a whole card number (13-19 digits) is
  tokenised on the way in, so a PAN can never land in the warehouse by mistake;
* reading the clear text back (:func:`reveal_member_pii`) needs the key and writes an ``audit_log`` row.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pandas as pd

from fuelcard.privacy import mask_id_number, mask_phone, sm4_decrypt, sm4_encrypt, tokenize_pan

if TYPE_CHECKING:
    from warehouse.engine import Warehouse

PAN_RE = re.compile(r"^\d{13,19}$")
RAW_PII_COLUMNS = ("id_number", "phone")


def protect_members(df: pd.DataFrame, *, sm4_key_hex: str) -> pd.DataFrame:
    """Replace raw ``id_number``/``phone`` with SM4 ciphertext and masks (returns a new frame)."""
    out = df.copy()
    for col, mask in (("id_number", mask_id_number), ("phone", mask_phone)):
        if col not in out.columns:
            continue
        raw = out.pop(col)
        present = raw.notna() & (raw.astype(str).str.len() > 0)
        values = raw.astype(str)
        out[f"{col}_enc"] = [sm4_encrypt(v, key_hex=sm4_key_hex) if p else "" for v, p in zip(values, present,
                                                                                              strict=True)]
        out[f"{col}_masked"] = [mask(v) if p else "" for v, p in zip(values, present, strict=True)]
    return out


def tokenize_card_columns(df: pd.DataFrame, *, token_key: bytes,
                          columns: tuple[str, ...] = ("card_id", "main_card_id")) -> pd.DataFrame:
    """Tokenise any value in the card-id columns that looks like a whole card number."""
    out = df
    for col in columns:
        if col not in out.columns:
            continue
        s = out[col].astype("string")
        is_pan = s.str.fullmatch(PAN_RE.pattern).fillna(False).to_numpy(dtype=bool)
        if is_pan.any():
            if out is df:
                out = df.copy()
            vals = out[col].astype(object).to_numpy()
            vals[is_pan] = [tokenize_pan(str(v), key=token_key) for v in vals[is_pan]]
            out[col] = vals
    return out


def assert_no_raw_pii(df: pd.DataFrame) -> None:
    """Refuse a frame that still carries raw PII columns (defence in depth before any insert)."""
    bad = [c for c in RAW_PII_COLUMNS if c in df.columns]
    if bad:
        raise ValueError(f"refusing to store raw PII column(s): {', '.join(bad)}")


def reveal_member_pii(wh: Warehouse, member_id: str, *, sm4_key_hex: str, actor: str, reason: str) -> dict[str, str]:
    """Decrypt one member's ID number and phone for an authorised actor; the read is audited.

    Display paths must use the masked columns (named query ``member_profile``) instead.
    """
    if not actor.strip() or not reason.strip():
        raise ValueError("actor and reason are required to reveal PII")
    df = wh.query_df(
        "SELECT id_number_enc, phone_enc FROM dim_member FINAL WHERE member_id = {m:String}", {"m": member_id}
    )
    wh.insert_df("audit_log", pd.DataFrame({
        "ts": [pd.Timestamp(datetime.now(UTC))], "actor": [actor], "action": ["reveal_member_pii"],
        "subject": [member_id], "detail": [reason],
    }))
    if df.empty:
        raise KeyError(member_id)
    row = df.iloc[0]
    return {
        "id_number": sm4_decrypt(row["id_number_enc"], key_hex=sm4_key_hex) if row["id_number_enc"] else "",
        "phone": sm4_decrypt(row["phone_enc"], key_hex=sm4_key_hex) if row["phone_enc"] else "",
    }
