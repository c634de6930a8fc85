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

import torch

VERIFY_MODES = ("batch", "packed")


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


def _scatter(logits: torch.Tensor, sel, n: int) -> torch.Tensor:
    if sel is None:
        return logits
    out = logits.new_zeros(logits.shape[0], n, logits.shape[-1])
    out[:, sel] = logits
    return out


def verify_batch(session, b: int, row_of: torch.Tensor, states: torch.Tensor, sel=None,
                 counted: bool = True) -> torch.Tensor:
    """Logits [N, n, V] for block states ``states`` [N, n] of rows ``row_of`` [N], as batch copies in one
    forward; ``sel``: compute logits only at these block positions, [m] for every copy or [N, m] per
    copy (others are left zero; a position repeated in a row's list is computed twice, read once)."""
    rows = session.target_rows(b, session.query_range(b)[0])
    out = session.states_forward(b, row_of, states, rows if sel is None else rows[sel], counted)
    if sel is None or sel.dim() == 1:
        return _scatter(out.logits, sel, states.shape[1])
    full = out.logits.new_zeros(states.shape[0], states.shape[1], out.logits.shape[-1])
    full[torch.arange(states.shape[0], device=sel.device)[:, None], sel] = out.logits
    return full


def packed_layout(session, b: int, m: int, sel=None):
    """The geometry of a packed sequence with ``m`` draft segments: the 4-D mask [1, 1, Lt, Lc + Lt] and
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
    with the real state ``states[0]``, then one segment per draft ``states[1:]``."""
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


def verify_packed(session, b: int, requests: list, sel=None, counted: bool = True) -> list:
    """Per request (row, states [N, n], row 0 the real state): logits [N, n, V] from ONE packed sequence
    per row, the rows' sequences batched in one forward (shorter requests padded with copies of their
    real state, whose outputs are dropped; a segment sees only itself and the query outside its block,
    so padding changes no other row). Exact under the dual cache; near-lossless under cache
    none/prefix (see the module docstring)."""
    N = max(st.shape[0] for _, st in requests)
    n = requests[0][1].shape[1]
    parts = []
    for row, st in requests:
        pad = st[:1].expand(N - st.shape[0], -1)
        parts.append(packed_row(session, b, row, torch.cat([st, pad])))
    ids, pos, valid, pmask = (torch.cat(t) for t in zip(*parts))
    mask, rows = packed_layout(session, b, N - 1, sel)
    row_of = torch.tensor([row for row, _ in requests], device=session.x.device)
    ctx = None if session.cfg.cache == "none" else session.context_rows(row_of)
    out = session.forward(ids, pos, valid, pmask, ctx, attention_mask=mask, logits_index=rows, counted=counted)
    logits = out.logits.reshape(len(requests), N, -1, out.logits.shape[-1])
    return [_scatter(logits[j, :st.shape[0]], sel, n) for j, (_, st) in enumerate(requests)]


def verify(session, b: int, requests: list, mode: str, masked_only: bool = True, counted: bool = True) -> list:
    """One forward for every request (row, states [N_j, n]; row 0 of each the row's real current state):
    per request, logits [N_j, n, V]; by default only at positions still masked in some real state."""
    real = torch.stack([st[0] for _, st in requests])
    sel = _masked_rows(real, session.mask_id) if masked_only else None
    if mode == "batch" or all(st.shape[0] == 1 for _, st in requests):
        dev = session.x.device
        counts = [st.shape[0] for _, st in requests]
        row_of = torch.cat([torch.full((c,), row, dtype=torch.long, device=dev) for (row, _), c in zip(requests, counts)])
        if sel is not None and len(requests) > 1:   # each copy computes its own row's masked positions only
            sel = _per_copy_rows(real, session.mask_id, counts)
        logits = verify_batch(session, b, row_of, torch.cat([st for _, st in requests]), sel, counted)
        return list(logits.split(counts))
    if mode == "packed":
        return verify_packed(session, b, requests, sel, counted)
    raise ValueError(f"verify mode must be one of {VERIFY_MODES}, got {mode!r}")
