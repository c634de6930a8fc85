"""A calibrated chance that a draft is accepted, for cost-aware pruning.

A draft of a round is accepted when the baseline's real trajectory passes through its state. Before the
verification forward the only evidence is the distribution the drafts were built from, the draft's place in
the graph, and the block. :class:`AcceptanceModel` is a logistic regression on features of a node, fitted on
the calibration traces (:mod:`spiffy.calibration.acceptance_fit`) and stored in the calibrated graph's
``meta["acceptance"]``. The features (:data:`FEATURES`):

- ``log_frequency``: log of the node's calibrated count over the root's (how often the calibration walk
  reached it);
- ``log_pick_prob``: log of the product of its picked tokens' probabilities under the round's distribution;
- ``log_gap``: log of the confidence margin between the last position rank it picks and the next rank (a
  pick whose position barely leads the next one is likely to be overtaken when the distribution moves);
- ``masked_fraction``: the share of the block still masked;
- ``adjacent``: the share of its picked positions next to an already committed token;
- ``depth``: its number of picks (steps ahead of the real state at one token per step);
- ``max_token_rank``: the largest token rank it picks (0: every pick is its position's top token);
- ``log_min_pick_prob``: log of its least probable picked token.

A model names the features it uses and its ``terms``: ``linear`` (weights on the raw features; the first
models written, on the first five) or ``quadratic`` (the features standardised by a stored centre and scale,
then every product of two of them added: the chance of a pick surviving depends on its probability *and* on
how much of the block is left, not on each alone). `spiffy calibrate` fits quadratic models on all eight.

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

FEATURES = ("log_frequency", "log_pick_prob", "log_gap", "masked_fraction", "adjacent", "depth", "max_token_rank",
            "log_min_pick_prob")
TERMS = ("linear", "quadratic")


def node_features(graph: nx.DiGraph, node, inst: Instantiation) -> dict:
    """The :data:`FEATURES` of one instantiated node (``inst`` from :func:`spiffy.speculative.proposer.instantiate`),
    by name."""
    freq = node_frequency(graph, node)
    conf = inst.confidence
    last = max(i for i, _ in node)
    gap = conf[last] - (conf[last + 1] if last + 1 < len(conf) else 0.0)
    masked = set(inst.order)
    n = len(inst.block)
    picked = [inst.order[i] for i, _ in node]
    adjacent = sum(1 for p in picked if (p > 0 and p - 1 not in masked) or (p + 1 < n and p + 1 not in masked))
    probs = inst.pick_probs[node]
    return {"log_frequency": math.log(freq + 1e-6), "log_pick_prob": math.log(math.prod(probs) + 1e-6),
            "log_gap": math.log(max(gap, 0.0) + 1e-4), "masked_fraction": len(masked) / max(n, 1),
            "adjacent": adjacent / len(picked), "depth": float(len(node)),
            "max_token_rank": float(max(j for _, j in node)), "log_min_pick_prob": math.log(min(probs) + 1e-6)}


def expand(z: Sequence[float], terms: str) -> list:
    """A model's terms from its (standardised) features: the features, then for ``quadratic`` every product
    ``z[i] * z[j]`` with ``i <= j``."""
    z = list(z)
    if terms == "linear":
        return z
    return z + [z[i] * z[j] for i in range(len(z)) for j in range(i, len(z))]


def n_terms(n: int, terms: str) -> int:
    return n if terms == "linear" else n + n * (n + 1) // 2


def _numbers(v, n: Optional[int] = None) -> bool:
    return (isinstance(v, list) and (n is None or len(v) == n)
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v))


@dataclass(frozen=True)
class AcceptanceModel:
    weights: tuple                   # one per term (see expand)
    bias: float
    features: tuple = FEATURES[:5]   # by name, in order
    terms: str = "linear"
    center: Optional[tuple] = None   # the features' standardisation (None: raw features)
    scale: Optional[tuple] = None

    def logit(self, feats) -> float:
        """``feats``: the node's features by name (:func:`node_features`) or as a sequence in ``self.features``' order."""
        x = [feats[k] for k in self.features] if isinstance(feats, dict) else list(feats)
        if self.center is not None:
            x = [(v - c) / s for v, c, s in zip(x, self.center, self.scale)]
        return self.bias + sum(w * t for w, t in zip(self.weights, expand(x, self.terms)))

    def prob(self, feats) -> float:
        z = self.logit(feats)
        return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0

    def to_meta(self, fit: Optional[dict] = None) -> dict:
        r = lambda v: [round(float(x), 6) for x in v]  # noqa: E731
        d = {"features": list(self.features), "terms": self.terms}
        if self.center is not None:
            d.update(center=r(self.center), scale=r(self.scale))
        return {**d, "weights": r(self.weights), "bias": round(self.bias, 6), **({"fit": fit} if fit else {})}

    @classmethod
    def from_meta(cls, d, where: str = "graph") -> "AcceptanceModel":
        """The model stored in a graph's ``meta["acceptance"]``; anything malformed is an ArtifactError. A model
        without ``terms`` is linear on raw features (as the first ones were written)."""
        feats = d.get("features") if isinstance(d, dict) else None
        if (not isinstance(feats, list) or not feats or not all(isinstance(k, str) for k in feats)
                or len(set(feats)) != len(feats) or not set(feats) <= set(FEATURES)):
            raise ArtifactError(f"{where}: meta.acceptance must list distinct features among {list(FEATURES)} "
                                f"(got {feats if isinstance(d, dict) else d!r})")
        terms = d.get("terms", "linear")
        if terms not in TERMS:
            raise ArtifactError(f"{where}: meta.acceptance terms must be one of {list(TERMS)} (got {terms!r})")
        w, b, n = d.get("weights"), d.get("bias"), len(feats)
        if not _numbers(w, n_terms(n, terms)) or not _numbers([b]):
            raise ArtifactError(f"{where}: meta.acceptance needs {n_terms(n, terms)} finite weights ({terms} terms of "
                                f"{n} features) and a finite bias")
        center, scale = d.get("center"), d.get("scale")
        if (center is None) != (scale is None):
            raise ArtifactError(f"{where}: meta.acceptance needs both center and scale, or neither")
        if center is None and terms != "linear":
            raise ArtifactError(f"{where}: meta.acceptance with {terms} terms needs the features' center and scale")
        if center is not None and (not _numbers(center, n) or not _numbers(scale, n) or min(scale) <= 0):
            raise ArtifactError(f"{where}: meta.acceptance center and scale need {n} finite numbers each, "
                                "scales positive")
        return cls(tuple(float(v) for v in w), float(b), tuple(feats), terms,
                   None if center is None else tuple(float(v) for v in center),
                   None if scale is None else tuple(float(v) for v in scale))


def acceptance_model(graph: nx.DiGraph) -> Optional[AcceptanceModel]:
    """The graph's fitted model (parsed once per graph object), or None when its meta has none."""
    cached = graph.graph.get("_acceptance_model", False)
    if cached is not False:
        return cached
    d = (graph.graph.get("meta") or {}).get("acceptance")
    model = None if d is None else AcceptanceModel.from_meta(d)
    graph.graph["_acceptance_model"] = model
    return model


def fit_logistic(X: Sequence[Sequence[float]], y: Sequence[bool], features: Sequence[str] = FEATURES[:5],
                 terms: str = "linear", l2: float = 1e-3) -> AcceptanceModel:
    """Maximum-likelihood logistic regression (Newton's method, a small L2 penalty on standardised terms).
    ``X``: one row per draft, its features in ``features``' order. ``linear``: weights on the raw features;
    ``quadratic``: the features standardised (centre and scale kept in the model), then :func:`expand`."""
    import numpy as np

    if terms not in TERMS:
        raise ValueError(f"terms must be one of {TERMS}, got {terms!r}")
    X, y = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(X) == 0 or y.min() == y.max():
        raise ValueError("fitting an acceptance model needs both accepted and rejected drafts")
    if X.shape[1] != len(features):
        raise ValueError(f"{X.shape[1]} feature columns for {len(features)} feature names")
    center = scale = None
    if terms == "quadratic":
        center, scale = X.mean(0), X.std(0)
        scale[scale < 1e-6] = 1.0          # a constant feature: its terms are 0
        X = np.array([expand(row, terms) for row in (X - center) / scale])
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
    as_tuple = lambda v: None if v is None else tuple(float(x) for x in v)  # noqa: E731
    return AcceptanceModel(as_tuple(raw), float(w[-1] - (w[:-1] * mu / sd).sum()), tuple(features), terms,
                           as_tuple(center), as_tuple(scale))
