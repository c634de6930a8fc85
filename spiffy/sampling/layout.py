"""The shapes one step's forward can take: batch copies, packed segments, and their static (padded) form.

A forward evaluates block states of some rows of a :class:`~spiffy.sampling.session.DecodeSession`:

- ``batch``: each state is a full copy of what the baseline's step runs for it (the whole sequence, or
  block + suffix over the prefix cache, or the block over the dual cache), stacked in the batch and
  sharing the frozen context;
- ``packed``: per row one sequence, its query with the real state first, then one segment per extra
  state (the block, plus the position before it for logit-shift families) under a 4-D mask in which a
  segment sees the query outside its block and itself, and the query sees only itself.

**Static shapes.** With ``GenerationConfig.static_drafts = D`` every step's forward, the baseline's
included, runs ONE shape: every row of the session at a fixed slot with ``D + 1`` states (batch copies
or packed segments; missing states are copies of the row's real state, rows that need nothing carry
their current block) and logits at every block position. The real state of row ``i`` then sits at the
same place of the same-shaped computation in the baseline and in Spiffy, so its logits are the same
bits on any device and with any kernel choice (kernels are picked by shape; the other slots' values do
not enter row ``i``'s arithmetic). It is also the one shape a compiled or graph-captured step needs.
Without it, a verification's rows are batch copies of a batch-1 baseline step: equal on paper, but a
kernel may round differently at another shape (measured on this CPU: vectorised tails of elementwise
ops, and SDPA with vs without a mask), so exactness rests on no argmax being decided by the last bit.
"""
from __future__ import annotations

import torch

from ..devices import to_device

LAYOUTS = ("batch", "packed")


def scatter_rows(logits: torch.Tensor, sel, n: int) -> torch.Tensor:
    """[N, m, V] logits at block positions ``sel`` -> [N, n, V] (other positions zero; None: all)."""
    if sel is None:
        return logits
    out = logits.new_zeros(logits.shape[0], n, logits.shape[-1])
    out[:, sel] = logits
    return out


def batch_forward(session, b: int, row_of: torch.Tensor, states: torch.Tensor, sel=None,
                  counted: bool = True) -> torch.Tensor:
    """Logits [N, n, V] for block states ``states`` [N, n] of rows ``row_of`` [N], as batch copies in one
    forward; ``sel``: compute logits only at these block positions, [m] for every copy or [N, m] per
    copy (others are left zero; a position repeated in a row's list is computed twice, read once)."""
    rows = session.target_rows(b, session.query_range(b)[0])
    out = session.states_forward(b, row_of, states, rows if sel is None else rows[sel], counted)
    if sel is None or sel.dim() == 1:
        return scatter_rows(out.logits, sel, states.shape[1])
    full = out.logits.new_zeros(states.shape[0], states.shape[1], out.logits.shape[-1])
    full[torch.arange(states.shape[0], device=sel.device)[:, None], sel] = out.logits
    return full


def packed_layout(session, b: int, m: int, sel=None):
    """The geometry of a packed sequence with ``m`` extra segments: the 4-D mask [1, 1, Lt, Lc + Lt] and
    the logits rows [(m + 1) * len(sel)]."""
    s, e = session.span(b)
    sh = session.shift
    qs, qe = session.query_range(b)
    dev = session.x.device
    rs, r = s - sh, e - (s - sh)                       # replaced region: the block (+ the shift position)
    Lq = qe - qs
    Lt = Lq + m * r
    mask = torch.zeros(Lt, Lt, dtype=torch.bool, device=dev)
    mask[:Lq, :Lq] = True
    outside = torch.ones(Lq, dtype=torch.bool, device=dev)
    outside[rs - qs:e - qs] = False
    within = torch.arange(e - s, device=dev) if sel is None else sel
    rows = [session.target_rows(b, qs)[within]]
    for i in range(m):
        a = Lq + i * r
        mask[a:a + r, :Lq] = outside
        mask[a:a + r, a:a + r] = True
        rows.append(a + within)
    if session.cfg.cache != "none":
        mask = torch.cat([torch.ones(Lt, session.context.length, dtype=torch.bool, device=dev), mask], dim=1)
    return mask[None, None], torch.cat(rows)


def packed_row(session, b: int, row: int, states: torch.Tensor):
    """ids, positions, key validity and prompt mask [1, Lt] of row ``row``'s packed sequence: its query
    with the real state ``states[0]``, then one segment per further state ``states[1:]``."""
    m = states.shape[0] - 1
    s, e = session.span(b)
    qs, qe = session.query_range(b)
    rs = s - session.shift
    x = session.x[row:row + 1]
    q_ids = x[:, qs:qe].clone()
    q_ids[:, s - qs:e - qs] = states[:1]
    seg = x[:, rs:e].expand(m, -1).clone()
    seg[:, session.shift:] = states[1:]

    def cat(t):
        return torch.cat([t[row:row + 1, qs:qe], t[row:row + 1, rs:e].repeat(1, m)], dim=1)

    return torch.cat([q_ids, seg.reshape(1, -1)], dim=1), cat(session.pos), cat(session.key_valid), cat(session.prompt_mask)


def packed_forward(session, b: int, requests: list, sel=None, counted: bool = True) -> list:
    """Per request (row, states [N, n], row 0 the real state): logits [N, n, V] from ONE packed sequence
    per row, the rows' sequences batched in one forward (shorter requests padded with copies of their
    real state, whose outputs are dropped; a segment sees only itself and the query outside its block,
    so padding changes no other row)."""
    N = max(st.shape[0] for _, st in requests)
    n = requests[0][1].shape[1]
    parts = []
    for row, st in requests:
        pad = st[:1].expand(N - st.shape[0], -1)
        parts.append(packed_row(session, b, row, torch.cat([st, pad])))
    ids, pos, valid, pmask = (torch.cat(t) for t in zip(*parts))
    mask, rows = packed_layout(session, b, N - 1, sel)
    row_of = to_device(torch.tensor([row for row, _ in requests]), session.x.device)
    ctx = None if session.cfg.cache == "none" else session.context_rows(row_of)
    out = session.forward(ids, pos, valid, pmask, ctx, attention_mask=mask, logits_index=rows, counted=counted)
    logits = out.logits.reshape(len(requests), N, -1, out.logits.shape[-1])
    return [scatter_rows(logits[j, :st.shape[0]], sel, n) for j, (_, st) in enumerate(requests)]


def static_forward(session, b: int, requests: list, counted: bool = True, every_row: bool = False) -> list:
    """The static-shape forward (``cfg.static_drafts = D``, layout ``cfg.static_layout``): every row of the
    session at its own slot with D + 1 states, logits at every block position. ``requests``: (row,
    states [N_j <= D + 1, n]) for the rows that need a distribution; returns per request [N_j, n, V]
    (``every_row``: per row of the session in order, a request's [N_j, n, V] or another row's current block's
    [1, n, V])."""
    D, layout = session.cfg.static_drafts, session.cfg.static_layout
    s, e = session.span(b)
    given = dict(requests)
    full = []
    for row in range(session.B):
        st = given.get(row)
        if st is None:                                  # a row that needs nothing carries its current block
            st = session.x[row:row + 1, s:e]
        if st.shape[0] > D + 1:
            raise ValueError(f"{st.shape[0] - 1} drafts do not fit the static shape of {D} drafts per row")
        full.append((row, torch.cat([st, st[:1].expand(D + 1 - st.shape[0], -1)])))
    if layout == "packed":
        outs = packed_forward(session, b, full, None, counted)
    else:
        row_of = torch.arange(session.B, device=session.x.device).repeat_interleave(D + 1)
        outs = batch_forward(session, b, row_of, torch.cat([st for _, st in full]), None, counted).split(D + 1)
    if every_row:
        return [outs[row][:len(given[row]) if row in given else 1] for row in range(session.B)]
    return [outs[row][:st.shape[0]] for row, st in requests]
