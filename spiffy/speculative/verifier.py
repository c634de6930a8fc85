"""Verification forwards: the real current state and every draft state in one model call.

``batch``: each state is a full copy of what the baseline's step would run (the whole sequence,
or block + suffix over the prefix cache, or the block over the dual cache), stacked in the batch
and sharing the frozen cache context. Every copy computes exactly what the baseline computes for that
state: exactly lossless for every model, cache mode and family.

``packed``: one sequence. The real query comes first; each draft's block (plus the position just
before it for logit-shift families) is appended, with that block's position ids, under a 4-D mask
in which a draft block sees every position except the block it replaces (and the other drafts),
and the real query sees only itself. Under the dual cache this is exact: the baseline's step also
sees a frozen context plus the block. Under cache ``none``/``prefix`` on a bidirectional model it is
only NEAR-lossless: the positions outside the block that a draft attends to were computed while
attending to the *current* block, not the draft's, so a draft's logits differ slightly from a real
forward of that state (measure it with ``SpeculativeConfig(measure_mismatch=True)``).
"""
from __future__ import annotations

import dataclasses

import torch

from ..backends.core import ContextKV

VERIFY_MODES = ("batch", "packed")


def packed_is_exact(cache: str) -> bool:
    return cache == "dual"


def repeat_context(ctx: ContextKV, n: int, cfg_doubled: bool) -> ContextKV:
    """n copies of each row of the context (CFG: [cond] * n + [uncond] * n, matching ``session.rows``)."""
    if not cfg_doubled:
        return ctx.repeat(n)
    idx = torch.tensor([0] * n + [1] * n, device=ctx.valid.device)
    return dataclasses.replace(ctx, layers=[(k.index_select(0, idx), v.index_select(0, idx)) for k, v in ctx.layers],
                               valid=ctx.valid.index_select(0, idx))


def _rows(states: torch.Tensor, mask_id: int, masked_only: bool):
    """Block positions whose logits are computed: all, or only those masked in the real state (a
    step never reads the logits of committed positions, and drafts only fill masked ones)."""
    n = states.shape[1]
    if not masked_only:
        return None
    sel = (states[0] == mask_id).nonzero().squeeze(-1)
    return None if sel.numel() == n else sel


def _scatter(logits: torch.Tensor, sel, n: int) -> torch.Tensor:
    if sel is None:
        return logits
    out = logits.new_zeros(logits.shape[0], n, logits.shape[-1])
    out[:, sel] = logits
    return out


def verify_batch(session, b: int, states: torch.Tensor, masked_only: bool = False) -> torch.Tensor:
    """Logits [N, n, V] for the N block states ``states`` [N, n] (row 0: the real current state) of a
    single-row session, all as batch copies in one forward. ``masked_only``: compute logits only at
    positions masked in the real state (others are left zero)."""
    N = states.shape[0]
    s, e = session.span(b)
    if session.cfg.cache == "none":
        qs, qe, ctx = 0, session.L, None
    else:
        qs, qe = session.query_range(b)
        ctx = repeat_context(session.context, N, session.use_cfg)
    ids = session.x[:, qs:qe].expand(N, -1).clone()
    ids[:, s - qs:e - qs] = states
    ids = session.rows(ids, qs, qe, True)
    pos = session.rows(session.pos[:, qs:qe].expand(N, -1), qs, qe, False)
    valid = session.rows(session.key_valid[:, qs:qe].expand(N, -1), qs, qe, False)
    sel = _rows(states, session.backend.mask_id, masked_only)
    rows = session.target_rows(b, qs)
    out = session.call(ids, pos, valid, context=ctx, logits_index=rows if sel is None else rows[sel])
    return _scatter(session.combine(out.logits), sel, states.shape[1])


def packed_inputs(session, b: int, states: torch.Tensor, sel=None):
    """ids, positions, key validity, prompt mask [1, Lt], the 4-D mask [1, 1, Lt, Lc + Lt] and the
    logits rows [N * n] of the packed sequence."""
    N, n = states.shape
    m = N - 1
    s, e = session.span(b)
    sh = session.shift
    if session.cfg.cache == "none":
        qs, qe = 0, session.L
    else:
        qs, qe = session.query_range(b)
    dev = session.x.device
    q_ids = session.x[:, qs:qe].clone()
    q_ids[:, s - qs:e - qs] = states[:1]
    rs, r = s - sh, e - (s - sh)                       # replaced region: the block (+ the shift position)
    seg = session.x[:, rs:e].expand(m, -1).clone()
    seg[:, sh:] = states[1:]
    ids = torch.cat([q_ids, seg.reshape(1, -1)], dim=1)
    pos = torch.cat([session.pos[:, qs:qe], session.pos[:, rs:e].repeat(1, m)], dim=1)
    valid = torch.cat([session.key_valid[:, qs:qe], session.key_valid[:, rs:e].repeat(1, m)], dim=1)
    pmask = torch.cat([session.prompt_mask[:, qs:qe], session.prompt_mask[:, rs:e].repeat(1, m)], dim=1)
    Lq = qe - qs
    Lt = Lq + m * r
    mask = torch.zeros(Lt, Lt, dtype=torch.bool, device=dev)
    mask[:Lq, :Lq] = True
    outside = torch.ones(Lq, dtype=torch.bool, device=dev)
    outside[rs - qs:e - qs] = False
    within = torch.arange(n, device=dev) if sel is None else sel
    rows = [session.target_rows(b, qs)[within]]
    for i in range(m):
        a = Lq + i * r
        mask[a:a + r, :Lq] = outside
        mask[a:a + r, a:a + r] = True
        rows.append(a + within)
    if session.context is not None and session.cfg.cache != "none":
        Lc = session.context.length
        mask = torch.cat([torch.ones(Lt, Lc, dtype=torch.bool, device=dev), mask], dim=1)
    return ids, pos, valid, pmask, mask[None, None], torch.cat(rows)


def verify_packed(session, b: int, states: torch.Tensor, masked_only: bool = False) -> torch.Tensor:
    """Logits [N, n, V] for ``states`` [N, n] (row 0: the real current state) from ONE packed sequence.
    Exact under the dual cache; near-lossless under cache none/prefix (see the module docstring)."""
    N, n = states.shape
    sel = _rows(states, session.backend.mask_id, masked_only)
    ids, pos, valid, pmask, mask, rows = packed_inputs(session, b, states, sel)
    ctx = None if session.cfg.cache == "none" else session.context
    if session.use_cfg:
        un = torch.where(pmask, torch.full_like(ids, session.backend.mask_id), ids)
        ids = torch.cat([ids, un])
        pos = torch.cat([pos, pos])
        valid = torch.cat([valid, valid])
    out = session.call(ids, pos, valid, context=ctx, attention_mask=mask, logits_index=rows)
    logits = session.combine(out.logits)               # [1, N * rows, V]
    return _scatter(logits.reshape(N, -1, logits.shape[-1]), sel, n)


def verify(session, b: int, states: torch.Tensor, mode: str, masked_only: bool = True) -> torch.Tensor:
    """Logits of every state; by default only at positions still masked in the real state."""
    if mode == "batch" or states.shape[0] == 1:
        return verify_batch(session, b, states, masked_only)
    if mode == "packed":
        return verify_packed(session, b, states, masked_only)
    raise ValueError(f"verify mode must be one of {VERIFY_MODES}, got {mode!r}")
