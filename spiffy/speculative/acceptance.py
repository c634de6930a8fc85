"""A calibrated chance that a draft is accepted, for cost-aware pruning.

A draft of a round is accepted when the baseline's real trajectory passes through its state. Before the
verification forward the only evidence is the distribution the drafts were built from, the draft's place in
the graph, and the block. :class:`AcceptanceModel` is a logistic regression on five such features of a node,
fitted on the calibration traces (:mod:`spiffy.calibration.acceptance_fit`) and stored in the calibrated
graph's ``meta["acceptance"]``:

- ``log_frequency``: log of the node's calibrated count over the root's (how often the calibration walk
  reached it);
- ``log_pick_prob``: log of the product of its picked tokens' probabilities under the round's distribution;
- ``log_gap``: log of the confidence margin between the last position rank it picks and the next rank (a
  pick whose position barely leads the next one is likely to be overtaken when the distribution moves);
- ``masked_fraction``: the share of the block still masked;
- ``adjacent``: the share of its picked positions next to an already committed token.

Its output is a probability (calibrated on the calibration prompts), which is what lets the pruner weigh
expected saved calls against seconds (:class:`spiffy.speculative.cost_pruning.CostAwarePruner`). Only the
width of each call depends on it; the output of a decode never does.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import networkx as nx

from ..errors import ArtifactError
from .graph import node_frequency
from .proposer import Instantiation

FEATURES = ("log_frequency", "log_pick_prob", "log_gap", "masked_fraction", "adjacent")


def node_features(graph: nx.DiGraph, node, inst: Instantiation) -> list:
    """The :data:`FEATURES` of one instantiated node (``inst`` from :func:`spiffy.speculative.proposer.instantiate`)."""
    freq = node_frequency(graph, node)
    conf = inst.confidence
    last = max(i for i, _ in node)
    gap = conf[last] - (conf[last + 1] if last + 1 < len(conf) else 0.0)
    masked = set(inst.order)
    n = len(inst.block)
    picked = [inst.order[i] for i, _ in node]
    adjacent = sum(1 for p in picked if (p > 0 and p - 1 not in masked) or (p + 1 < n and p + 1 not in masked))
    return [math.log(freq + 1e-6), math.log(math.prod(inst.pick_probs[node]) + 1e-6), math.log(max(gap, 0.0) + 1e-4),
            len(masked) / max(n, 1), adjacent / len(picked)]


@dataclass(frozen=True)
class AcceptanceModel:
    weights: tuple          # one per feature of FEATURES, on the raw features
    bias: float

    def prob(self, x: Sequence[float]) -> float:
        z = self.bias + sum(w * v for w, v in zip(self.weights, x))
        return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0

    def to_meta(self, fit: Optional[dict] = None) -> dict:
        return {"features": list(FEATURES), "weights": [round(w, 6) for w in self.weights],
                "bias": round(self.bias, 6), **({"fit": fit} if fit else {})}

    @classmethod
    def from_meta(cls, d, where: str = "graph") -> "AcceptanceModel":
        """The model stored in a graph's ``meta["acceptance"]``; anything malformed is an ArtifactError."""
        if not isinstance(d, dict) or d.get("features") != list(FEATURES):
            raise ArtifactError(f"{where}: meta.acceptance must list the features {list(FEATURES)} "
                                f"(got {d.get('features') if isinstance(d, dict) else d!r})")
        w, b = d.get("weights"), d.get("bias")
        nums = (w if isinstance(w, list) else []) + [b]
        if (not isinstance(w, list) or len(w) != len(FEATURES)
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in nums)):
            raise ArtifactError(f"{where}: meta.acceptance needs {len(FEATURES)} finite weights and a finite bias")
        return cls(tuple(float(v) for v in w), float(b))


def acceptance_model(graph: nx.DiGraph) -> Optional[AcceptanceModel]:
    """The graph's fitted model (parsed once per graph object), or None when its meta has none."""
    cached = graph.graph.get("_acceptance_model", False)
    if cached is not False:
        return cached
    d = (graph.graph.get("meta") or {}).get("acceptance")
    model = None if d is None else AcceptanceModel.from_meta(d)
    graph.graph["_acceptance_model"] = model
    return model


def fit_logistic(X: Sequence[Sequence[float]], y: Sequence[bool], l2: float = 1e-3) -> AcceptanceModel:
    """Maximum-likelihood logistic regression (Newton's method, a small L2 penalty on standardised features),
    returned with weights on the raw features."""
    import numpy as np

    X, y = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(X) == 0 or y.min() == y.max():
        raise ValueError("fitting an acceptance model needs both accepted and rejected drafts")
    mu, sd = X.mean(0), X.std(0) + 1e-9
    Z = np.c_[(X - mu) / sd, np.ones(len(X))]
    w = np.zeros(Z.shape[1])
    reg = l2 * np.eye(len(w))
    reg[-1, -1] = 0.0
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-np.clip(Z @ w, -700, 700)))
        g = Z.T @ (p - y) / len(y) + reg @ w
        H = (Z * (p * (1 - p))[:, None]).T @ Z / len(y) + reg + 1e-12 * np.eye(len(w))
        step = np.linalg.solve(H, g)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    raw = w[:-1] / sd
    return AcceptanceModel(tuple(float(v) for v in raw), float(w[-1] - (w[:-1] * mu / sd).sum()))
