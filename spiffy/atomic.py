"""Atomic writes. Files: a temporary file in the same folder, flushed and fsync'd, then renamed over the
target; an interrupted write leaves the previous file intact (never a truncated one). Folders (a
checkpoint, a calibration set): built in a temporary sibling named after the writing process, then
renamed into place (:func:`temp_folder`, :func:`replace_folder`); a killed writer leaves the previous
folder (or none) and a temporary that the next writer removes once that process is gone."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Union


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Union[str, Path], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Union[str, Path], data: bytes) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())   # mkstemp makes 0600; the file gets the mode open() would give
        with os.fdopen(fd, "wb") as f:
            f.write(data)
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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_folders(parent: Path):
    """Temporary folders (``.NAME.tmp-PID-…``, ``.NAME.old-PID-…``) of processes that no longer run."""
    if not parent.is_dir():
        return
    for p in parent.iterdir():
        parts = p.name.split(".")
        if p.is_dir() and p.name.startswith(".") and len(parts) >= 3 and parts[-1].startswith(("tmp-", "old-")):
            try:
                pid = int(parts[-1].split("-")[1])
            except (IndexError, ValueError):
                continue
            if not _alive(pid):
                shutil.rmtree(p, ignore_errors=True)


def temp_folder(final: Union[str, Path]) -> Path:
    """A fresh, empty temporary sibling of ``final`` (stale ones of dead processes are removed first)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_folders(final.parent)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()   # os.mkdir honours the umask (tempfile.mkdtemp would force 0700)
    return tmp


def replace_folder(tmp: Union[str, Path], final: Union[str, Path]):
    """Move the finished folder ``tmp`` to ``final``; a folder already there is moved aside, then removed."""
    tmp, final = Path(tmp), Path(final)
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def folder_in_place(final: Union[str, Path]):
    """Build a folder under a temporary name (yielded) and move it to ``final`` once the block finishes;
    on any error the temporary folder is removed and ``final`` is left as it was."""
    tmp = temp_folder(final)
    try:
        yield tmp
        replace_folder(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
