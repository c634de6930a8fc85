"""Parsing of comma-separated option values, with the allowed range in the message."""
from __future__ import annotations

from typing import Optional

from .errors import ConfigError


def int_list(text, what: str, lo: int = 1, hi: Optional[int] = None) -> list:
    """Sorted distinct integers in [lo, hi] from ``"3,5,8"``; a :class:`ConfigError` otherwise."""
    try:
        out = [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{what} must be comma-separated integers, got {text!r}") from None
    span = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
    if not out or any(v < lo or (hi is not None and v > hi) for v in out):
        raise ConfigError(f"{what} must be integers in {span}, got {text!r}")
    return sorted(set(out))
