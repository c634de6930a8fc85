"""Training data: corpora from a data directory, packed pretraining windows and SFT (prompt, answer) rows.

Held-out data is never read for training: GSM8K test, HumanEval and MBPP test ids 11-510 are excluded
here (and asserted). Corpora are read from the data directory, never copied into the repository.
"""
from __future__ import annotations

import ast
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from spiffy.datasets import MBPP_TEST_IDS, read_jsonl


def stdlib_files(data_dir: Path, split: str = "train", drop_tests: bool = True) -> list[dict]:
    rows = read_jsonl(Path(data_dir) / "python_stdlib" / f"{split}.jsonl")
    if drop_tests:
        rows = [r for r in rows if not r["path"].startswith(("Lib/test/", "Lib/idlelib/idle_test/"))
                and "/tests/" not in r["path"]]
    return rows


def gsm8k_rows(data_dir: Path, split: str = "train") -> list[dict]:
    return read_jsonl(Path(data_dir) / "gsm8k" / f"{split}.jsonl")


def mbpp_train_rows(data_dir: Path) -> list[dict]:
    rows = [r for r in read_jsonl(Path(data_dir) / "mbpp" / "mbpp.jsonl") if int(r["task_id"]) not in MBPP_TEST_IDS]
    assert all(int(r["task_id"]) not in MBPP_TEST_IDS for r in rows)
    return rows


def mbpp_prompt(row: dict) -> str:
    return row["text"] + "\nYour code should pass these tests:\n" + "\n".join(row["test_list"]) + "\n"


# ---------------------------------------------------------------------------------------------- pretraining
def source_texts(data_dir, name: str, max_chars: Optional[int] = None, seed: int = 0) -> list[str]:
    d = Path(data_dir)
    if name == "python_stdlib":
        texts = [r["text"] for r in stdlib_files(d, "train")]
    elif name == "python_docs":
        texts = [r["text"] for r in read_jsonl(d / "python_docs" / "train.jsonl")]
    elif name == "gsm8k":
        texts = [f"Question: {r['question']}\nAnswer: {r['answer']}" for r in gsm8k_rows(d, "train")]
    elif name == "mbpp":
        texts = [mbpp_prompt(r) + r["code"] for r in mbpp_train_rows(d)]
    elif name.endswith(".jsonl") or name.endswith(".txt"):  # a file (tests use synthetic corpora)
        p = Path(name) if Path(name).exists() else d / name
        texts = [r["text"] for r in read_jsonl(p)] if p.suffix == ".jsonl" else [p.read_text(encoding="utf-8")]
    else:
        raise ValueError(f"unknown pretraining source {name!r}")
    rng = random.Random(seed)
    rng.shuffle(texts)
    if max_chars is not None:
        out, n = [], 0
        for t in texts:
            if n >= max_chars:
                break
            out.append(t)
            n += len(t)
        texts = out
    return texts


def tokenize_stream(tok, texts: list[str], eos_id: int) -> np.ndarray:
    ids = []
    enc = tok(texts, add_special_tokens=False)["input_ids"]
    for e in enc:
        ids.extend(e)
        ids.append(eos_id)
    return np.asarray(ids, dtype=np.int32)


class PackedMixture:
    """Random windows of ``seq_len`` tokens from several token streams, mixed by weight (seeded)."""

    def __init__(self, streams: dict, weights: dict, seq_len: int, seed: int = 0):
        self.names = [n for n in streams if len(streams[n]) > seq_len]
        if not self.names:
            raise ValueError("no pretraining stream is longer than seq_len")
        self.streams = streams
        w = np.array([weights.get(n, 1.0) for n in self.names], dtype=np.float64)
        self.p = w / w.sum()
        self.seq_len = seq_len
        self.rng = np.random.default_rng(seed)

    def batch(self, batch_size: int) -> torch.Tensor:
        out = np.empty((batch_size, self.seq_len), dtype=np.int64)
        src = self.rng.choice(len(self.names), size=batch_size, p=self.p)
        for i, s in enumerate(src):
            arr = self.streams[self.names[s]]
            start = int(self.rng.integers(0, len(arr) - self.seq_len))
            out[i] = arr[start:start + self.seq_len]
        return torch.from_numpy(out)


# ------------------------------------------------------------------------------------------------------ SFT
def stdlib_function_pairs(data_dir, limit: int = 4000, seed: int = 0, max_body_lines: int = 25) -> list[tuple]:
    """HumanEval-style (stub, body) pairs from the stdlib: prompt = signature + docstring, answer = body."""
    pairs = []
    for r in stdlib_files(Path(data_dir), "train"):
        src = r["text"]
        try:
            tree = ast.parse(src)
        except SyntaxError:
            continue
        lines = src.splitlines(keepends=True)
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or node.col_offset != 0:
                continue
            body = node.body
            if len(body) < 2 or not (isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                                     and isinstance(body[0].value.value, str)):
                continue
            doc_end = body[0].end_lineno
            end = node.end_lineno
            if end - doc_end > max_body_lines or end - doc_end < 1:
                continue
            stub = "".join(lines[node.lineno - 1 - len(node.decorator_list):doc_end])
            answer = "".join(lines[doc_end:end])
            if len(stub) > 1200:
                continue
            pairs.append((stub, answer))
    random.Random(seed).shuffle(pairs)
    return pairs[:limit]


def sft_pairs(data_dir, sources: dict, seed: int = 0) -> list[tuple[str, str]]:
    """(user text, answer text) pairs. sources: {"gsm8k": repeat, "mbpp": repeat, "stdlib_functions": limit}."""
    d = Path(data_dir)
    pairs = []
    if sources.get("gsm8k"):
        g = [(r["question"], r["answer"]) for r in gsm8k_rows(d, "train")]
        pairs += g * int(sources["gsm8k"])
    if sources.get("mbpp"):
        m = [(mbpp_prompt(r), r["code"].replace("\r\n", "\n")) for r in mbpp_train_rows(d)]
        pairs += m * int(sources["mbpp"])
    if sources.get("stdlib_functions"):
        pairs += stdlib_function_pairs(d, limit=int(sources["stdlib_functions"]), seed=seed)
    for name in sources:
        if name.endswith(".jsonl"):  # synthetic {"prompt","answer"} files (tests)
            p = Path(name) if Path(name).exists() else d / name
            pairs += [(r["prompt"], r["answer"]) for r in read_jsonl(p)]
    random.Random(seed).shuffle(pairs)
    return pairs


@dataclass
class SFTRow:
    prompt: list
    answer: list   # answer tokens incl. the first EOS (no padding)


def encode_sft(tok, pairs, eos_id: int, max_prompt: int, max_answer: int) -> list[SFTRow]:
    from .chat_format import format_prompt

    prompts = tok([format_prompt(p) for p, _ in pairs], add_special_tokens=False)["input_ids"]
    answers = tok([a for _, a in pairs], add_special_tokens=False)["input_ids"]
    rows = []
    for p, a in zip(prompts, answers):
        if len(p) > max_prompt or len(a) + 1 > max_answer:
            continue  # keep complete answers only: the model must learn where an answer ends
        rows.append(SFTRow(p, a + [eos_id]))
    return rows


class SFTBatches:
    """Seeded batches of SFT rows: prompt, then answer, then EOS padding up to ``answer_len`` (right
    side), so every row has the same length. ``prompt_mask`` marks prompt tokens (never noised/trained);
    ``answer_len_tokens`` is the answer-side length (with padding) per row; ``first_eos`` marks the
    answer tokens proper (answer + its first EOS) for the AR loss."""

    def __init__(self, rows: list[SFTRow], answer_len: int, pad_id: int, eos_id: int, seed: int = 0,
                 left_pad_prompt: bool = True):
        self.rows, self.answer_len, self.pad_id, self.eos_id = rows, answer_len, pad_id, eos_id
        self.rng = np.random.default_rng(seed)
        self.left_pad_prompt = left_pad_prompt

    def batch(self, batch_size: int) -> dict:
        idx = self.rng.integers(0, len(self.rows), size=batch_size)
        rows = [self.rows[i] for i in idx]
        P = max(len(r.prompt) for r in rows)
        L = P + self.answer_len
        ids = torch.full((batch_size, L), self.eos_id, dtype=torch.long)
        prompt_mask = torch.zeros(batch_size, L, dtype=torch.bool)
        valid = torch.ones(batch_size, L, dtype=torch.bool)
        answer_tok = torch.zeros(batch_size, L, dtype=torch.bool)
        for i, r in enumerate(rows):
            # prompts are left-padded (as the sampler pads a batch), the answer starts at P for all rows
            off = P - len(r.prompt)
            ids[i, :off] = self.pad_id
            valid[i, :off] = False
            ids[i, off:P] = torch.tensor(r.prompt)
            prompt_mask[i, :P] = True
            a = r.answer[:self.answer_len]
            ids[i, P:P + len(a)] = torch.tensor(a)
            answer_tok[i, P:P + len(a)] = True
        return {"input_ids": ids, "prompt_mask": prompt_mask, "valid": valid, "answer_tokens": answer_tok}
