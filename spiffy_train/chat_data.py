"""Training rows for adapting a chat model to masked diffusion: instruction pairs in the model's own chat
template, and windows of plain text.

A chat row is ``prompt (chat template, generation prompt) | answer | end-of-turn | masks``: the answer
window of a batch is the longest answer rounded up to whole blocks, and the positions after a row's
end-of-turn hold mask tokens that the model sees but is never trained on. That is the state block decoding
with early stop produces (answer blocks, then untouched masks), and it never teaches the model to fill
answers with padding (training on end-of-text padding collapsed a probe run to empty answers). Prompts are
left-padded; the padding is hidden from attention.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from spiffy.errors import ConfigError


@dataclass
class ChatRow:
    prompt: list
    answer: list   # answer tokens + the end-of-turn token


def encode_chat(tok, pairs, eot_id: int, max_prompt: int, max_answer: int) -> list[ChatRow]:
    rows = []
    for q, a in pairs:
        p = tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True)
        if hasattr(p, "keys"):
            p = p["input_ids"]
        ans = tok(a, add_special_tokens=False)["input_ids"] + [eot_id]
        if len(p) > max_prompt or len(ans) > max_answer:
            continue   # complete answers only: the model must learn where an answer ends
        rows.append(ChatRow(list(p), ans))
    return rows


def chat_batch(rows: list, pad_id: int, mask_id: int, block: int, max_answer: int) -> dict:
    """``input_ids`` (clean; positions after the end-of-turn already hold ``mask_id``), ``valid`` (False on
    left padding), ``noisable`` (answer + end-of-turn), ``content_len`` [B], ``answer_start`` [B] (all equal)."""
    B = len(rows)
    P = max(len(r.prompt) for r in rows)
    longest = max(len(r.answer) for r in rows)
    A = min(max_answer, -(-longest // block) * block)
    ids = torch.full((B, P + A), mask_id, dtype=torch.long)
    valid = torch.ones(B, P + A, dtype=torch.bool)
    noisable = torch.zeros(B, P + A, dtype=torch.bool)
    for i, r in enumerate(rows):
        off = P - len(r.prompt)
        ids[i, :off] = pad_id
        valid[i, :off] = False
        ids[i, off:P] = torch.tensor(r.prompt)
        ids[i, P:P + len(r.answer)] = torch.tensor(r.answer)
        noisable[i, P:P + len(r.answer)] = True
    content = torch.tensor([len(r.answer) for r in rows])
    return {"input_ids": ids, "valid": valid, "noisable": noisable, "content_len": content,
            "answer_start": torch.full((B,), P, dtype=torch.long)}


class ChatBatches:
    """Seeded random batches of chat rows; the sampler state travels with checkpoints."""

    def __init__(self, rows: list, pad_id: int, mask_id: int, block: int, max_answer: int, seed: int):
        if not rows:
            raise ConfigError("no training rows: every pair was longer than the recipe's limits")
        self.rows, self.pad_id, self.mask_id, self.block, self.max_answer = rows, pad_id, mask_id, block, max_answer
        self.rng = np.random.default_rng(seed)

    def batch(self, batch_size: int) -> dict:
        idx = self.rng.integers(0, len(self.rows), size=batch_size)
        return chat_batch([self.rows[i] for i in idx], self.pad_id, self.mask_id, self.block, self.max_answer)


class TextWindows:
    """Random windows of a token stream; every position but the first is noisable (with the logit shift
    the first has nothing to its left to predict it from)."""

    def __init__(self, stream: np.ndarray, seq_len: int, seed: int):
        if len(stream) <= seq_len:
            raise ConfigError(f"text stream of {len(stream)} tokens is shorter than a window of {seq_len}")
        self.stream, self.seq_len = stream, seq_len
        self.rng = np.random.default_rng(seed)

    def batch(self, batch_size: int) -> dict:
        starts = self.rng.integers(0, len(self.stream) - self.seq_len, size=batch_size)
        ids = torch.from_numpy(np.stack([self.stream[s:s + self.seq_len] for s in starts]).astype(np.int64))
        noisable = torch.ones_like(ids, dtype=torch.bool)
        noisable[:, 0] = False
        B = ids.shape[0]
        return {"input_ids": ids, "valid": torch.ones_like(noisable), "noisable": noisable,
                "content_len": torch.full((B,), self.seq_len - 1), "answer_start": torch.ones(B, dtype=torch.long)}
