"""A block drafter's vocabulary shortlist: the target's most frequent token ids on the training text.

The runtime (:mod:`spiffy.ar.block_drafter`) scores only these ids plus the ids of the text it has seen, so the
drafter's call reads a fraction of the target's LM head; the output does not depend on it (the target verifies).
Counted on the training splits only (GSM8K-train questions and answers, MBPP-train problems and code, stdlib
function bodies); every special id of the tokenizer is kept. Writes ``shortlist.json`` atomically:

    python -m spiffy_train.shortlist --target smollm2-135m-instruct --size 8192 \\
        --out models/spiffy-smollm2-drafter/shortlist.json
"""
from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from spiffy.ar.block_model import SHORTLIST_FORMAT
from spiffy.atomic import atomic_write_json

from .data import gsm8k_rows, mbpp_train_rows, stdlib_function_pairs


def training_texts(data_dir) -> dict:
    d = Path(data_dir)
    return {"gsm8k-train": [r["question"] + "\n" + r["answer"] for r in gsm8k_rows(d, "train")],
            "mbpp-train": [r["text"] + "\n" + r["code"] for r in mbpp_train_rows(d)],
            "stdlib-functions": [p + b for p, b in stdlib_function_pairs(d, limit=4000)]}


def build_shortlist(tokenizer, texts: dict, size: int) -> dict:
    counts = Counter()
    for rows in texts.values():
        for ids in tokenizer(rows, add_special_tokens=False)["input_ids"]:
            counts.update(ids)
    special = sorted(set(tokenizer.all_special_ids))
    ids = sorted(set(special) | {i for i, _ in counts.most_common(max(0, size - len(special)))})
    total = sum(counts.values())
    return {"format": SHORTLIST_FORMAT, "size": len(ids), "ids": ids,
            "made_from": {k: len(v) for k, v in texts.items()}, "tokens_counted": total,
            "coverage_of_counted_tokens": round(sum(counts[i] for i in ids) / max(1, total), 5)}


def main(argv=None):
    from spiffy.backends.loader import resolve_path
    from spiffy.datasets import resolve_data_dir
    from spiffy.errors import SpiffyError
    from transformers import AutoTokenizer

    ap = argparse.ArgumentParser(description="write a block drafter's vocabulary shortlist (shortlist.json)")
    ap.add_argument("--target", default="smollm2-135m-instruct")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--size", type=int, default=8192)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    if a.size < 1:
        ap.exit(2, f"error: --size must be at least 1 (got {a.size})\n")
    try:
        data = resolve_data_dir(a.data_dir)        # before the tokenizer loads: a missing directory fails at once
        path = resolve_path(a.target)
        try:
            tok = AutoTokenizer.from_pretrained(str(path))
        except (OSError, ValueError) as e:
            ap.exit(2, f"error: the tokenizer of {a.target!r} could not be loaded: {type(e).__name__}: {e}\n")
        res = build_shortlist(tok, training_texts(data), a.size)
    except SpiffyError as e:
        ap.exit(2, f"error: {e}\n")
    atomic_write_json(Path(a.out), res)
    print(json.dumps({k: v for k, v in res.items() if k != "ids"}))

if __name__ == "__main__":
    main()
