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

import dataclasses
from typing import Optional

import torch

from ..backends.backend import DiffusionBackend
from ..backends.core import ContextKV
from ..backends.layers import KVBuffer
from ..timing import ForwardClock
from .config import GenerationConfig
from .layout import static_forward
from .loop import Canvas


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class DecodeSession(Canvas):
    """The canvas of a decode plus every model call made on it."""

    def __init__(self, backend: DiffusionBackend, prompts: list[list[int]], cfg: GenerationConfig):
        self.backend = backend
        dev = backend.device
        B, P = len(prompts), max(len(p) for p in prompts)
        x = torch.full((B, P + cfg.gen_length), backend.pad_id, dtype=torch.long, device=dev)
        valid = torch.zeros_like(x, dtype=torch.bool)
        for i, p in enumerate(prompts):  # left padding
            x[i, P - len(p):P] = torch.tensor(p, dtype=torch.long, device=dev)
            valid[i, P - len(p):] = True
        x[:, P:] = backend.mask_id
        super().__init__(x, P, cfg, backend.mask_id, backend.eos_id, backend.eot_id, backend.pad_id)
        self.key_valid = valid
        self.padded = any(len(p) < self.P for p in prompts)
        self.pos = (valid.long().cumsum(-1) - 1).clamp(min=0)
        self.prompt_mask = valid.clone()
        self.prompt_mask[:, self.P:] = False
        self.use_cfg = cfg.cfg_scale > 0
        self.context: Optional[ContextKV] = None
        self.buffers: dict = {}    # static shapes: rows -> (block, the context in KV buffers: backends.layers.KVBuffer)
        self.block = -1
        self.nfe = 0
        self.tokens_processed = 0
        self.clock = ForwardClock(dev)
        self.calls: list = []      # (query tokens, frozen-context tokens) of every counted forward
        self.shift = backend.logit_shift

    # ------------------------------------------------------------------ geometry
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
    def context_rows(self, row_of: Optional[torch.Tensor]) -> Optional[ContextKV]:
        """The frozen context for query rows copied from rows ``row_of`` (None: the session's own rows;
        CFG: the conditional copies, then the unconditional ones)."""
        ctx = self.context
        if ctx is None or row_of is None:
            return ctx
        kept = self.buffers.get(row_of.numel()) if self.cfg.static_drafts else None
        if kept is not None and kept[0] == self.block:
            return kept[1]
        if self.B == 1 and not self.use_cfg:
            sub = ctx.repeat(row_of.numel())          # views of the one row
        else:
            idx = torch.cat([row_of, row_of + self.B]) if self.use_cfg else row_of
            sub = dataclasses.replace(ctx, layers=[(k.index_select(0, idx), v.index_select(0, idx))
                                                   for k, v in ctx.layers], valid=ctx.valid.index_select(0, idx))
        if self.cfg.static_drafts:   # every step of the block runs this shape: the context is copied in once
            if kept is None:
                layers = [KVBuffer(k, v) for k, v in sub.layers]
            else:                    # the buffers of earlier blocks, refilled (same memory when the shape holds)
                layers = kept[1].layers
                for buf, (k, v) in zip(layers, sub.layers):
                    buf.set_context(k, v)
            sub = dataclasses.replace(sub, layers=layers)
            self.buffers[row_of.numel()] = (self.block, sub)
        return sub

    def combine(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.use_cfg:
            return logits
        cond, un = logits.chunk(2)
        return un + (self.cfg.cfg_scale + 1) * (cond - un)

    def forward(self, ids, pos, valid, prompt_mask, context=None, attention_mask=None, return_kv=False,
                logits_index=None, counted: bool = True):
        """One model call on query rows (CFG doubles them, the unconditional copy with its prompt
        masked). Counted in NFE (CFG's unconditional half as a second call) unless ``counted=False``:
        a diagnostic forward no decode needs. Returns the output with CFG-combined logits."""
        if self.use_cfg:
            un = torch.where(prompt_mask, torch.full_like(ids, self.mask_id), ids)
            ids, pos, valid = torch.cat([ids, un]), torch.cat([pos, pos]), torch.cat([valid, valid])
            if logits_index is not None and logits_index.dim() == 2:
                logits_index = torch.cat([logits_index, logits_index])
        if context is not None and isinstance(context.layers[0], KVBuffer):
            for buf in context.layers:
                buf.reserve(ids.shape[1])
        t0 = self.clock.start()
        out = self.backend.forward(ids, pos, attention_mask, context, return_kv, logits_index,
                                   key_valid=valid if self.padded else None)
        if counted:
            self.clock.stop(t0)
            self.nfe += 2 if self.use_cfg else 1
            self.tokens_processed += ids.numel()
            self.calls.append((ids.numel(), 0 if context is None else context.length))
        out.logits = self.combine(out.logits)
        return out

    def states_forward(self, b: int, row_of: Optional[torch.Tensor], states: torch.Tensor, logits_index=None,
                       counted: bool = True):
        """Query row i is row ``row_of[i]`` (None: row i of the session) with its block set to ``states[i]``,
        each exactly what a step of this session runs for that state (over the shared frozen context)."""
        qs, qe = self.query_range(b)
        s, e = self.span(b)
        r = slice(None) if row_of is None else row_of
        ids = self.x[r, qs:qe].clone()
        ids[:, s - qs:e - qs] = states
        return self.forward(ids, self.pos[r, qs:qe], self.key_valid[r, qs:qe], self.prompt_mask[r, qs:qe],
                            None if self.cfg.cache == "none" else self.context_rows(row_of),
                            logits_index=self.target_rows(b, qs) if logits_index is None else logits_index,
                            counted=counted)

    def begin_block(self, b: int) -> torch.Tensor:
        """The block's first step: a full forward (which also builds the cache). Logits [B, n, V]."""
        cache = self.cfg.cache
        out = self.forward(self.x, self.pos, self.key_valid, self.prompt_mask, return_kv=cache != "none",
                           logits_index=self.target_rows(b, 0))
        self.block = b
        if cache != "none":
            qs, qe = self.query_range(b)
            dev = self.x.device
            idx = torch.cat([torch.arange(qs, device=dev), torch.arange(qe, self.L, device=dev)])   # kept positions
            layers = [(k.index_select(2, idx), v.index_select(2, idx)) for k, v in out.kv]
            valid = self.key_valid[:, idx]
            self.context = ContextKV(layers, torch.cat([valid, valid]) if self.use_cfg else valid, idx,
                                     all_valid=not self.padded)
        return out.logits

    def block_logits(self, b: int, block: torch.Tensor) -> torch.Tensor:
        """Logits [B, n, V] for the block holding ``block`` [B, n], under the cache mode (at the static shape
        when ``cfg.static_drafts`` is set: :func:`~spiffy.sampling.layout.static_forward`)."""
        if self.cfg.static_drafts:
            return torch.cat(static_forward(self, b, [(i, block[i:i + 1]) for i in range(self.B)]))
        return self.states_forward(b, None, block).logits
