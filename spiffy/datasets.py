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
    cand = Path(__file__).resolve().parents[2] / "shared" / "data"
    return cand if cand.is_dir() else None


def resolve_data_dir(data_dir=None) -> Path:
    d = Path(data_dir) if data_dir else default_data_dir()
    if d is None or not d.is_dir():
        raise ConfigError(
            f"data directory {'(none)' if d is None else d} is missing: pass --data-dir DIR (a folder with gsm8k/, "
            "humaneval/, mbpp/, python_stdlib/ …) or set SPIFFY_DATA")
    return d


def read_jsonl(path) -> list[dict]:
    """Rows of a JSONL file; ``X.jsonl`` may also be stored as ``X.jsonl.gz`` (a device data pack)."""
    path = Path(path)
    if not path.exists() and path.suffix != ".gz" and path.with_name(path.name + ".gz").exists():
        path = path.with_name(path.name + ".gz")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


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
    p = Path(name)
    if name not in DATASETS and p.exists():
        rows = []
        lines = p.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(l for l in lines if l.strip()):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                obj = line
            if isinstance(obj, dict):
                text = obj.get("prompt") or obj.get("question")
                if text is None:
                    raise ConfigError(f"{p}: line {i + 1} has neither a 'prompt' nor a 'question' key")
                rows.append({"id": str(obj.get("id", i)), "prompt": text, "reference": obj.get("answer")})
            else:
                rows.append({"id": str(i), "prompt": str(obj), "reference": None})
        return rows[:limit] if limit else rows
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}: choose one of {DATASETS} or give a file path")
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
