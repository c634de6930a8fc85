"""Prompt sets for benchmarks and calibration, read from a data directory.

The data directory defaults to ``$SPIFFY_DATA`` or, when it exists, ``../shared/data`` next to the
repository. Nothing in the library or its tests needs it; commands that do say so clearly.
"""
from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Optional

from .errors import ConfigError

DATASETS = ("gsm8k", "gsm8k-train", "humaneval", "mbpp", "mbpp-train")
MBPP_TEST_IDS = range(11, 511)   # the standard MBPP test split (never trained or calibrated on)


def default_data_dir() -> Optional[Path]:
    env = os.environ.get("SPIFFY_DATA")
    if env:
        return Path(env)
    from .resources import CHECKOUT

    cand = CHECKOUT.parent / "shared" / "data"   # a checkout beside the project's shared data
    return cand if cand.is_dir() else None


def resolve_data_dir(data_dir=None) -> Path:
    d = Path(data_dir) if data_dir else default_data_dir()
    if d is None or not d.is_dir():
        raise ConfigError(
            f"data directory {'(none)' if d is None else d} is missing: pass --data-dir DIR (a folder with gsm8k/, "
            "humaneval/, mbpp/, python_stdlib/ …) or set SPIFFY_DATA")
    return d


def read_lines(path) -> list[tuple[int, str]]:
    """(line number, text) of the non-blank lines of a UTF-8 text file (``.gz`` read through gzip);
    bad encoding or a damaged archive is a :class:`ConfigError` naming the file and line."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise ConfigError(f"{path}: cannot be read ({type(e).__name__}: {e})") from None
    out = []
    for i, line in enumerate(raw.split(b"\n"), 1):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError(f"{path}:{i}: not valid UTF-8 (byte {e.start + 1} of the line)") from None
        if text.strip():
            out.append((i, text.rstrip("\r")))
    return out


def read_jsonl(path) -> list[dict]:
    """Rows of a JSONL file; ``X.jsonl`` may also be stored as ``X.jsonl.gz`` (a device data pack). A line
    that is not a JSON object is an error naming the file and line."""
    path = Path(path)
    if not path.exists() and path.suffix != ".gz" and path.with_name(path.name + ".gz").exists():
        path = path.with_name(path.name + ".gz")
    rows = []
    for i, line in read_lines(path):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}:{i}: not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(obj, dict):
            raise ConfigError(f"{path}:{i}: expected a JSON object, got {type(obj).__name__}")
        rows.append(obj)
    return rows


def _jsonl(path: Path) -> list[dict]:
    if not path.exists() and not path.with_name(path.name + ".gz").exists():
        raise ConfigError(f"{path} is missing from the data directory")
    return read_jsonl(path)


def load_prompts(name: str, limit: Optional[int] = None, data_dir=None) -> list[dict]:
    """Rows {"id", "prompt", "reference"} of a named set, or of a JSONL/text FILE (one prompt per
    line, or objects with a "prompt" or "question" key).

    gsm8k = GSM8K test questions; gsm8k-train = GSM8K train; humaneval = HumanEval stubs;
    mbpp = MBPP test ids 11-510; mbpp-train = MBPP ids 1-10 and 511-974.
    """
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be >= 1 (got {limit}); leave it out for every row")
    p = Path(name)
    if name not in DATASETS and p.exists():
        if p.is_dir():
            raise ConfigError(f"{p} is a folder: give a prompt file (JSONL, or plain text with one prompt per line)")
        rows = []
        if p.suffix in (".jsonl", ".json") or p.name.endswith(".jsonl.gz"):
            for k, obj in enumerate(read_jsonl(p)):
                text = obj.get("prompt") or obj.get("question")
                if not isinstance(text, str) or not text.strip():
                    raise ConfigError(f"{p}: row {k + 1} has no non-empty 'prompt' or 'question' text")
                rows.append({"id": str(obj.get("id", k)), "prompt": text, "reference": obj.get("answer")})
        else:   # plain text: one prompt per line
            rows = [{"id": str(k), "prompt": text, "reference": None} for k, (_, text) in enumerate(read_lines(p))]
        if not rows:
            raise ConfigError(f"{p} holds no prompts (an empty file)")
        return rows[:limit] if limit else rows
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r} (and no such file): choose one of {', '.join(DATASETS)} or "
                          "give a prompt file")
    d = resolve_data_dir(data_dir)
    if name in ("gsm8k", "gsm8k-train"):
        split = "test" if name == "gsm8k" else "train"
        rows = [{"id": f"gsm8k-{split}/{i}", "prompt": r["question"], "reference": r["answer"]}
                for i, r in enumerate(_jsonl(d / "gsm8k" / f"{split}.jsonl"))]
    elif name == "humaneval":
        rows = [{"id": r["task_id"], "prompt": r["prompt"], "reference": r["canonical_solution"]}
                for r in _jsonl(d / "humaneval" / "HumanEval.jsonl.gz")]
    else:
        test = name == "mbpp"
        rows = [{"id": f"mbpp/{r['task_id']}", "prompt": r["text"] + "\n" + "\n".join(r["test_list"]),
                 "reference": r["code"]}
                for r in _jsonl(d / "mbpp" / "mbpp.jsonl") if (r["task_id"] in MBPP_TEST_IDS) == test]
    return rows[:limit] if limit else rows
