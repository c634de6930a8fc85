"""Runtime pruning score: calibrate a larger graph, verify only the best D* of its nodes each round.

A node's score is the geometric mean of its picked tokens' probabilities under the current
distribution, plus ``child_weight`` times the best score among its children that can be built this
round (a node whose continuation also looks likely is worth more, since accepting it lets the walk go
on). Scores are computed deepest first. Plug it into ``SpeculativeConfig(prune=calibrated_pruner(3))``.
"""
from __future__ import annotations

import networkx as nx

from ..speculative.proposer import Instantiation, Pruner, geometric_mean_score


class ChildAwareScore:
    def __init__(self, child_weight: float = 0.5):
        self.child_weight = child_weight
        self._memo_for = (None, None)   # the (graph, instantiation) the memo belongs to, held by reference
        self._memo = {}

    def _all(self, graph: nx.DiGraph, inst: Instantiation) -> dict:
        g0, i0 = self._memo_for
        if g0 is not graph or i0 is not inst:
            scores = {}
            for f in sorted(inst.states, key=len, reverse=True):
                own = geometric_mean_score(graph, f, inst)
                kids = [scores[c] for c in graph.successors(f) if c in scores]
                scores[f] = own + self.child_weight * (max(kids) if kids else 0.0)
            self._memo_for, self._memo = (graph, inst), scores
        return self._memo

    def __call__(self, graph: nx.DiGraph, node, inst: Instantiation) -> float:
        return self._all(graph, inst)[node]


def calibrated_pruner(keep: int, child_weight: float = 0.5) -> Pruner:
    return Pruner(keep, ChildAwareScore(child_weight))
