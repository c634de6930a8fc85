"""A calibration set (``D*.json``, ``counts.json``, ``report.json``, ``prompts.jsonl``, plots) is written
as one unit: into a temporary sibling folder named after the writing process, then renamed into
place. A run that is killed leaves the previous set (or none) plus a temporary folder that the next run
removes once its process is gone; a set is never a mix of two runs. An existing set is replaced only
when asked (``force``). Folders and files get the modes the umask gives."""
from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from ..errors import ArtifactError


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(parent: Path):
    """Temporary set folders (and stray atomic-write files) left by processes that no longer run."""
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


def check_free(final: Path, force: bool):
    if final.exists() and not force:
        raise ArtifactError(f"{final} already holds a calibration set: pass --force to replace it, or choose "
                            "another --out")


def begin(final: Path, force: bool) -> Path:
    """A fresh temporary folder beside ``final`` (after the overwrite check and stale clean-up)."""
    check_free(final, force)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(final.parent)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()   # os.mkdir honours the umask (tempfile.mkdtemp would force 0700)
    return tmp


def commit(tmp: Path, final: Path, force: bool):
    """Move the finished set into place (the old set, if replaced, is removed afterwards)."""
    old = None
    if final.exists():
        check_free(final, force)
        old = final.parent / f".{final.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def discard(tmp: Path):
    shutil.rmtree(tmp, ignore_errors=True)
