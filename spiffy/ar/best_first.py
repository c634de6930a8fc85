"""Best-first draft trees from one block's per-position distributions (the DDTree construction).

With a drafter that gives every slot of a block its own distribution q_1..q_γ (one forward, slots
independent given the context), the score of a candidate prefix t_1..t_d is Σ log q_i(t_i). The tree keeps
the ``budget`` highest-scoring prefixes: a heap holds, for every node already taken, its best child and
its parent's next child, so each pop is the best prefix not yet in the tree. Scores only fall along a
path, so a node always comes after its parent (what :class:`DraftTree` and the ancestor mask expect).
"""
from __future__ import annotations

import heapq

import torch

from .tree import DraftTree


def best_first_tree(q: torch.Tensor, budget: int, stop_ids=(), width: int = 8) -> tuple[DraftTree, list]:
    """A tree of at most ``budget`` nodes from ``q`` [γ, V] (rows: the block's slots in order); each node
    chooses among the ``width`` most likely tokens of its slot; nothing grows below a stop token. Returns
    (tree, the best chain: argmax of every slot, cut after a stop token)."""
    tree = DraftTree()
    g = q.shape[0]
    if budget < 1 or g < 1:
        return tree, []
    k = min(width, q.shape[1])
    top = q.to(torch.float64).topk(k, dim=-1)
    host = torch.cat([top.values.clamp(min=1e-300).log(), top.indices.to(torch.float64)], -1).tolist()  # one read
    logp = [row[:k] for row in host]
    toks = [[int(t) for t in row[k:]] for row in host]
    stop = set(int(t) for t in stop_ids)
    heap = [(-logp[0][0], 0, 0, -1, 0.0)]   # (-score, depth, rank, parent node, parent score)
    while heap and len(tree) < budget:
        neg, depth, rank, parent, pscore = heapq.heappop(heap)
        score = -neg
        tok = toks[depth][rank]
        node = len(tree)
        tree.tokens.append(int(tok))
        tree.parents.append(parent)
        if rank + 1 < k:   # the parent's next child
            heapq.heappush(heap, (-(pscore + logp[depth][rank + 1]), depth, rank + 1, parent, pscore))
        if depth + 1 < g and tok not in stop:   # this node's best child
            heapq.heappush(heap, (-(score + logp[depth + 1][0]), depth + 1, 0, node, score))
    best = []
    for d in range(g):
        best.append(int(toks[d][0]))
        if best[-1] in stop:
            break
    return tree, best
