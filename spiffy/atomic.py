"""Atomic file writes: a temporary file in the same folder, flushed and fsync'd, then renamed over the
target. An interrupted write leaves the previous file intact (never a truncated one)."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Union


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Union[str, Path], text: str) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())   # mkstemp makes 0600; the file gets the mode open() would give
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return p


def atomic_write_json(path: Union[str, Path], obj, indent=1) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")
