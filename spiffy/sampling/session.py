"""The sequence being decoded and every model call made on it, under one of the KV-cache modes.

Cache modes (Fast-dLLM semantics; each is an exact, deterministic baseline of its own):
- ``none``: every step runs the whole sequence.
- ``prefix``: at a block's first step the whole sequence runs and the keys/values of everything
  before the block are kept; later steps of the block run the block and the suffix.
- ``dual``: the suffix's keys/values are frozen at block start too; later steps run only the block.

For families with a logit shift (Dream: the logit at i-1 predicts token i) the query also includes
the position just before the block, so every block position gets a fresh prediction.
"""
from __future__ import annotations

import time
from typing import Optional

import torch

from ..backends.backend import DiffusionBackend
from ..backends.core import ContextKV
from .config import GenerationConfig


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class DecodeSession:
    def __init__(self, backend: DiffusionBackend, prompts: list[list[int]], cfg: GenerationConfig):
        self.backend, self.cfg = backend, cfg
        dev = backend.device
        self.B = len(prompts)
        self.P = max(len(p) for p in prompts)
        self.L = self.P + cfg.gen_length
        x = torch.full((self.B, self.L), backend.pad_id, dtype=torch.long, device=dev)
        valid = torch.zeros(self.B, self.L, dtype=torch.bool, device=dev)
        for i, p in enumerate(prompts):  # left padding
            x[i, self.P - len(p):self.P] = torch.tensor(p, dtype=torch.long, device=dev)
            valid[i, self.P - len(p):] = True
        x[:, self.P:] = backend.mask_id
        self.x = x
        self.key_valid = valid
        self.padded = any(len(p) < self.P for p in prompts)
        self.pos = (valid.long().cumsum(-1) - 1).clamp(min=0)
        self.prompt_mask = valid.clone()
        self.prompt_mask[:, self.P:] = False
        self.use_cfg = cfg.cfg_scale > 0
        self.context: Optional[ContextKV] = None
        self.nfe = 0
        self.tokens_processed = 0
        self.model_time = 0.0
        self.shift = backend.logit_shift

    # ------------------------------------------------------------------ geometry
    def span(self, b: int) -> tuple[int, int]:
        s = self.P + b * self.cfg.block_length
        return s, s + self.cfg.block_length

    def query_range(self, b: int) -> tuple[int, int]:
        """The positions a step inside block b recomputes under the session's cache mode."""
        s, e = self.span(b)
        if self.cfg.cache == "none":
            return 0, self.L
        if self.cfg.cache == "prefix":
            return s - self.shift, self.L
        return s - self.shift, e

    def target_rows(self, b: int, qs: int) -> torch.Tensor:
        """Query rows whose hidden states predict the block's positions."""
        s, e = self.span(b)
        return torch.arange(s - self.shift - qs, e - self.shift - qs, device=self.x.device)

    # ------------------------------------------------------------------ model calls
    def rows(self, t: torch.Tensor, qs: int, qe: int, is_ids: bool) -> torch.Tensor:
        """Double the batch for classifier-free guidance: the unconditional copy masks the prompt."""
        if not self.use_cfg:
            return t
        if is_ids:
            un = torch.where(self.prompt_mask[:, qs:qe], torch.full_like(t, self.backend.mask_id), t)
            return torch.cat([t, un])
        return torch.cat([t, t])

    def query_ids(self, b: int, qs: int, qe: int, block: Optional[torch.Tensor]) -> torch.Tensor:
        ids = self.x[:, qs:qe]
        if block is not None:
            s, e = self.span(b)
            ids = ids.clone()
            ids[:, s - qs:e - qs] = block
        return ids

    def combine(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.use_cfg:
            return logits
        cond, un = logits.chunk(2)
        return un + (self.cfg.cfg_scale + 1) * (cond - un)

    def call(self, ids, pos, valid, context=None, attention_mask=None, return_kv=False, logits_index=None):
        """One model forward (counted in NFE; CFG's unconditional half counts as a second call)."""
        dev = self.backend.device
        _sync(dev)
        t0 = time.perf_counter()
        out = self.backend.forward(ids, pos, attention_mask, context, return_kv, logits_index,
                                   key_valid=valid if self.padded else None)
        _sync(dev)
        self.model_time += time.perf_counter() - t0
        self.nfe += 2 if self.use_cfg else 1
        self.tokens_processed += ids.numel()
        return out

    def run_query(self, b, qs, qe, block=None, context=None, return_kv=False):
        ids = self.rows(self.query_ids(b, qs, qe, block), qs, qe, True)
        pos = self.rows(self.pos[:, qs:qe], qs, qe, False)
        valid = self.rows(self.key_valid[:, qs:qe], qs, qe, False)
        return self.call(ids, pos, valid, context=context, return_kv=return_kv,
                         logits_index=self.target_rows(b, qs))

    def begin_block(self, b: int) -> torch.Tensor:
        """The block's first step: a full forward (which also builds the cache). Logits [B, n, V]."""
        cache = self.cfg.cache
        out = self.run_query(b, 0, self.L, return_kv=cache != "none")
        if cache != "none":
            qs, qe = self.query_range(b)
            keep = torch.ones(self.L, dtype=torch.bool, device=self.x.device)
            keep[qs:qe] = False
            idx = keep.nonzero().squeeze(-1)
            layers = [(k.index_select(2, idx), v.index_select(2, idx)) for k, v in out.kv]
            valid = self.rows(self.key_valid[:, idx], 0, 0, False)
            self.context = ContextKV(layers, valid, idx, all_valid=not self.padded)
        return self.combine(out.logits)

    def block_logits(self, b: int, block: torch.Tensor) -> torch.Tensor:
        """Logits [B, n, V] for the block holding ``block`` [B, n], under the cache mode."""
        if self.cfg.cache == "none":
            return self.combine(self.run_query(b, 0, self.L, block).logits)
        qs, qe = self.query_range(b)
        return self.combine(self.run_query(b, qs, qe, block, context=self.context).logits)

    def commit(self, b: int, block: torch.Tensor) -> None:
        s, e = self.span(b)
        self.x[:, s:e] = block

    def generated(self) -> torch.Tensor:
        return self.x[:, self.P:]
