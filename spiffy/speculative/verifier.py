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

from ..devices import to_device
from ..sampling.layout import LAYOUTS, batch_forward, packed_forward, static_forward

VERIFY_MODES = LAYOUTS


def packed_is_exact(cache: str) -> bool:
    return cache == "dual"


def _masked(state, mask_id: int) -> list:
    return [p for p, t in enumerate(state) if t == mask_id]


def verify(session, b: int, requests: list, mode: str, masked_only: bool = True, counted: bool = True,
           every_row: bool = False) -> list:
    """One forward for every request (row, states; the first state of each is the row's real current state):
    per request, logits [N_j, n, V]; by default only at positions still masked in some real state (a step never
    reads the logits of committed positions, and drafts only fill masked ones). ``states``: block states as
    lists of token ids (the proposer's, on the host) or an [N_j, n] tensor. The plan (which rows, which
    positions) is made on the host and uploaded without waiting for the device. Under a static shape
    (``cfg.static_drafts``) it is :func:`~spiffy.sampling.layout.static_forward`: every row at its slot,
    padded to the shape, every position computed (``every_row``: the logits of every row of the session, see
    there)."""
    host = [(row, st.tolist() if isinstance(st, torch.Tensor) else [list(s) for s in st]) for row, st in requests]
    dev = session.x.device
    counts = [len(st) for _, st in host]
    states = to_device(torch.tensor([s for _, st in host for s in st], dtype=torch.long), dev)
    on_device = list(zip([row for row, _ in host], states.split(counts)))
    if session.cfg.static_drafts:
        if mode != session.cfg.static_layout:
            raise ValueError(f"verify={mode!r} under a static {session.cfg.static_layout!r} shape")
        return static_forward(session, b, on_device, counted, every_row)
    n = len(host[0][1][0])
    masked = [_masked(st[0], session.mask_id) for _, st in host]
    union = sorted(set().union(*masked))
    sel = None if not masked_only or len(union) == n else union
    if mode == "batch" or all(c == 1 for c in counts):
        row_of = to_device(torch.tensor([row for (row, _), c in zip(host, counts) for _ in range(c)]), dev)
        if sel is not None and len(host) > 1:   # each copy computes its own row's masked positions only, padded to
            m = max(len(x) for x in masked)     # the longest list by repeating the row's first one
            sel = [x + x[:1] * (m - len(x)) for x, c in zip(masked, counts) for _ in range(c)]
        sel = None if sel is None else to_device(torch.tensor(sel), dev)
        return list(batch_forward(session, b, row_of, states, sel, counted).split(counts))
    if mode == "packed":
        return packed_forward(session, b, on_device, None if sel is None else to_device(torch.tensor(sel), dev), counted)
    raise ValueError(f"verify mode must be one of {VERIFY_MODES}, got {mode!r}")
