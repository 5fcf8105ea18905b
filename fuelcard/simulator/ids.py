"""Fast sequential string ids (vectorised; a million ids in well under a second)."""

from __future__ import annotations

import numpy as np


def seq_ids(prefix: str, n: int, width: int, *, start: int = 1) -> np.ndarray:
    """``prefix`` + zero-padded ``start .. start+n-1`` as an object array of str.

    >>> seq_ids("T", 3, 4).tolist()
    ['T0001', 'T0002', 'T0003']
    """
    p = np.frombuffer(prefix.encode(), dtype=np.uint8)
    k = np.arange(start, start + n, dtype=np.int64)
    m = np.empty((n, len(p) + width), dtype=np.uint8)
    m[:, : len(p)] = p
    for i in range(width):
        m[:, len(p) + width - 1 - i] = (k // 10**i) % 10 + ord("0")
    return m.view(f"S{len(p) + width}").ravel().astype(f"U{len(p) + width}").astype(object)
