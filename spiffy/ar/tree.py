"""Draft trees (D²SD / DDTree style) and their attention mask.

From the main draft's per-position confidences c_1..c_γ, the probability that verification accepts
exactly i tokens and rejects token i+1 is estimated as r(i) = ∏_{k≤i} c_k · (1 − c_{i+1}). At the
``branches`` most likely rejection points the tree adds the drafter's runner-up token at position
i+1 and re-drafts the rest of the block after it (all branches in one batched drafter pass). The
whole tree is verified in one target forward with an ancestor-only attention mask
(:meth:`spiffy.ar.target.TargetState.extend_tree`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class DraftTree:
    tokens: list = field(default_factory=list)    # node tokens
    parents: list = field(default_factory=list)   # parent node index, -1 = root (the pending token)

    def add_chain(self, parent: int, toks, stop_ids=()) -> int:
        """Append a chain below ``parent``, cut after the first stop token; returns the last node."""
        node = parent
        for t in toks:
            self.tokens.append(int(t))
            self.parents.append(node)
            node = len(self.tokens) - 1
            if int(t) in stop_ids:
                break
        return node

    def __len__(self):
        return len(self.tokens)

    def path_to(self, node: int) -> list:
        out = []
        while node != -1:
            out.append(node)
            node = self.parents[node]
        return out[::-1]


def node_depths(parents: list) -> list:
    """Depth of every node of a tree given as parent indices (-1: a child of the root, depth 1); every node
    must come after its parent."""
    depth = []
    for j, p in enumerate(parents):
        if p >= j:
            raise ValueError("tree nodes must come after their parents")
        depth.append(1 if p < 0 else depth[p] + 1)
    return depth


def rejection_scores(conf: torch.Tensor) -> torch.Tensor:
    """r(i) for i = 0..γ-1: accept the first i tokens, reject token i+1 (0-based index i)."""
    c = conf.to(torch.float64)
    prefix = torch.cat([c.new_ones(1), c.cumprod(0)[:-1]])
    return prefix * (1 - c)


def branch_alternatives(conf: torch.Tensor, q: torch.Tensor, taken: list, branches: int) -> list:
    """(position, alternative token) at the ``branches`` positions most likely to be rejected (0-based index
    of the token to replace), in position order; the alternative is the position's most likely token other
    than ``taken`` (none when it has no probability). One read: the positions with their top-2 tokens."""
    r = rejection_scores(conf)
    k = min(branches, r.numel())
    if k <= 0:
        return []
    pts = r.topk(k).indices
    top = q[pts].to(torch.float64).topk(min(2, q.shape[-1]), dim=-1)
    m = top.values.shape[-1]
    out = []
    for row in sorted(torch.cat([pts[:, None].to(torch.float64), top.values, top.indices.to(torch.float64)], 1).tolist()):
        i = int(row[0])
        alt = next((int(t) for p, t in zip(row[1:1 + m], row[1 + m:]) if int(t) != taken[i] and p > 0), None)
        if alt is not None:
            out.append((i, alt))
    return out
