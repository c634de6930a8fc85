"""Verification: the real current state and every draft state of the rows that need a call, in one forward.

The shapes (batch copies, packed segments, static padding) are :mod:`spiffy.sampling.layout`'s, which the
baseline's step shares. ``batch`` is exactly lossless for every model and cache mode: each copy computes what
the baseline computes for that state. ``packed`` is exact under the dual cache, where the baseline's step also
sees a frozen context plus the block. Under cache ``none``/``prefix`` on a bidirectional model it is only
NEAR-lossless: the positions outside the block that a draft attends to were computed while attending to the
*current* block, not the draft's (measure it with ``SpeculativeConfig(measure_mismatch=True)``).
"""
from __future__ import annotations

import torch

from ..sampling.layout import LAYOUTS, batch_forward, packed_forward, static_forward

VERIFY_MODES = LAYOUTS


def packed_is_exact(cache: str) -> bool:
    return cache == "dual"


def _masked_rows(real: torch.Tensor, mask_id: int):
    """Block positions whose logits are computed: those masked in any real state ``real`` [R, n] (a step
    never reads the logits of committed positions, and drafts only fill masked ones); None = all."""
    sel = (real == mask_id).any(0).nonzero().squeeze(-1)
    return None if sel.numel() == real.shape[1] else sel


def _per_copy_rows(real: torch.Tensor, mask_id: int, counts: list):
    """[N, m]: for every copy, the positions masked in its row's real state, padded to the longest list
    by repeating the row's first one (m = the most masked positions of any row)."""
    lists = [(r == mask_id).nonzero().squeeze(-1) for r in real]
    m = max(len(x) for x in lists)
    padded = [torch.cat([x, x[:1].expand(m - len(x))]) for x in lists]
    return torch.cat([p[None].expand(c, -1) for p, c in zip(padded, counts)])


def verify(session, b: int, requests: list, mode: str, masked_only: bool = True, counted: bool = True) -> list:
    """One forward for every request (row, states [N_j, n]; row 0 of each the row's real current state):
    per request, logits [N_j, n, V]; by default only at positions still masked in some real state. Under a
    static shape (``cfg.static_drafts``) it is :func:`~spiffy.sampling.layout.static_forward`: every row at
    its slot, padded to the shape, every position computed."""
    if session.cfg.static_drafts:
        if mode != session.cfg.static_layout:
            raise ValueError(f"verify={mode!r} under a static {session.cfg.static_layout!r} shape")
        return static_forward(session, b, requests, counted)
    real = torch.stack([st[0] for _, st in requests])
    sel = _masked_rows(real, session.mask_id) if masked_only else None
    if mode == "batch" or all(st.shape[0] == 1 for _, st in requests):
        dev = session.x.device
        counts = [st.shape[0] for _, st in requests]
        row_of = torch.cat([torch.full((c,), row, dtype=torch.long, device=dev) for (row, _), c in zip(requests, counts)])
        if sel is not None and len(requests) > 1:   # each copy computes its own row's masked positions only
            sel = _per_copy_rows(real, session.mask_id, counts)
        logits = batch_forward(session, b, row_of, torch.cat([st for _, st in requests]), sel, counted)
        return list(logits.split(counts))
    if mode == "packed":
        return packed_forward(session, b, requests, sel, counted)
    raise ValueError(f"verify mode must be one of {VERIFY_MODES}, got {mode!r}")
