"""A compact, training-only copy of the data directory, for training on a machine that cannot see it.

The device machine (see models/device/README.md) gets the working tree and nothing else, at most 64 MiB
of it. This writes the files the recipes read for *training* as gzipped JSONL, in the data directory's
own layout, so ``--data-dir PACK`` works unchanged (``spiffy_train.data.read_jsonl`` reads ``X.jsonl.gz``
where ``X.jsonl`` is asked for):

* python_stdlib/train.jsonl.gz: the stdlib train split without test suites (what ``stdlib_files`` keeps)
* python_docs/train.jsonl.gz, gsm8k/train.jsonl.gz
* mbpp/mbpp.jsonl.gz: MBPP without the test ids 11-510

Held-out data (GSM8K test, HumanEval, MBPP test ids, the valid splits) is left out, so a run on the pack
cannot train on it. Each source folder's README (source, licence) is copied along, and MANIFEST.json
records the row counts and sha256 of what was written. The pack goes in a git-ignored folder (``.data/``).

    python -m spiffy_train.datapack [--data-dir DIR] [--out .data/train-pack] [--max-mb 32]
                                    [--eval-out .data/eval/gsm8k-test-first24.jsonl] [--eval-n 24]
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import shutil
from pathlib import Path

from spiffy.atomic import atomic_write_text
from spiffy.datasets import MBPP_TEST_IDS, resolve_data_dir
from .data import mbpp_train_rows, read_jsonl, stdlib_files


def _rows(data_dir: Path) -> dict:
    return {
        "python_stdlib/train.jsonl.gz": stdlib_files(data_dir, "train"),
        "python_docs/train.jsonl.gz": read_jsonl(data_dir / "python_docs" / "train.jsonl"),
        "gsm8k/train.jsonl.gz": read_jsonl(data_dir / "gsm8k" / "train.jsonl"),
        "mbpp/mbpp.jsonl.gz": mbpp_train_rows(data_dir),
    }


def build_pack(data_dir=None, out="./.data/train-pack", max_mb: float = 32.0) -> dict:
    """Write the pack to ``out`` (replacing it) and return its manifest. Raises ValueError when the pack
    would exceed ``max_mb`` megabytes."""
    src = resolve_data_dir(data_dir)
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    files = {}
    for rel, rows in _rows(src).items():
        if rel.startswith("mbpp/"):
            assert all(int(r["task_id"]) not in MBPP_TEST_IDS for r in rows)
        p = tmp / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
        with open(p, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0) as f:
            f.write(data)
        files[rel] = {"rows": len(rows), "bytes": p.stat().st_size, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
        readme = src / rel.split("/")[0] / "README.md"
        if readme.exists():
            shutil.copyfile(readme, p.parent / "README.md")
    total = sum(f.stat().st_size for f in tmp.rglob("*") if f.is_file())
    if total > max_mb * 1e6:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ValueError(f"the pack would be {total / 1e6:.1f} MB, over --max-mb {max_mb}")
    manifest = {"source": str(src), "total_bytes": total, "files": files,
                "left_out": "GSM8K test, HumanEval, MBPP test ids 11-510, every valid split, stdlib test suites"}
    atomic_write_text(tmp / "MANIFEST.json", json.dumps(manifest, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return manifest


def write_eval_prompts(data_dir=None, out="./.data/eval/gsm8k-test-first24.jsonl", n: int = 24) -> Path:
    """The first ``n`` GSM8K test questions as a prompt file (``{"id", "question"}`` rows), for measuring
    speculatability where the data directory is absent: ``load_prompts(FILE)`` gives the same prompts as
    ``load_prompts("gsm8k", n)``. Kept outside the pack, which stays training-only."""
    from spiffy.datasets import load_prompts

    rows = load_prompts("gsm8k", n, data_dir)
    atomic_write_text(out, "".join(json.dumps({"id": r["id"], "question": r["prompt"]}) + "\n" for r in rows))
    return Path(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description="write a gzipped, training-only copy of the data directory")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default=".data/train-pack")
    ap.add_argument("--max-mb", type=float, default=32.0)
    ap.add_argument("--eval-out", default=".data/eval/gsm8k-test-first24.jsonl",
                    help="also write the first --eval-n GSM8K test questions here ('' to skip)")
    ap.add_argument("--eval-n", type=int, default=24)
    a = ap.parse_args(argv)
    if a.eval_out:
        print(f"wrote {write_eval_prompts(a.data_dir, a.eval_out, a.eval_n)}")
    m = build_pack(a.data_dir, a.out, a.max_mb)
    print(f"wrote {a.out}: {m['total_bytes'] / 1e6:.1f} MB, " + ", ".join(f"{k} {v['rows']} rows"
                                                                       for k, v in m["files"].items()))


if __name__ == "__main__":
    main()
