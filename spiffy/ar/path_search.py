"""DiffuSpec causal-consistency path search over the drafter's token lattice.

A one-step diffusion draft gives an independent marginal per position; its per-position argmax need
not be a fluent left-to-right sequence. For each draft position keep the fewest top tokens whose mass
reaches τ (at most M; EOS is always kept), then beam-search left to right with the score
λ · log q_i(t) + (1 − λ) · log P_ngram(t | previous n−1 tokens). A path that takes EOS ends there (no
expansion past the first EOS). Beams are ranked by their mean per-token score, so paths of different
lengths compare fairly.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ConfigError


@dataclass
class PathSearchConfig:
    beam: int = 3
    tau: float = 0.8
    max_candidates: int = 15
    lam: float = 0.5

    def check(self):
        if self.beam < 1:
            raise ConfigError(f"path-search beam must be >= 1 (got {self.beam})")
        if not 0 < self.tau <= 1:
            raise ConfigError(f"path-search tau must be in (0, 1] (got {self.tau})")
        if self.max_candidates < 1:
            raise ConfigError(f"path-search max candidates must be >= 1 (got {self.max_candidates})")
        if not 0 <= self.lam <= 1:
            raise ConfigError(f"path-search lambda must be in [0, 1] (got {self.lam})")


def candidate_sets(q: torch.Tensor, tau: float, max_candidates: int, eos_ids=()) -> list:
    """Per position: (token ids, drafter probs) of the fewest top tokens with mass >= tau (cap M), plus EOS."""
    out = []
    k_max = min(max_candidates, q.shape[1])
    probs, order = q.topk(k_max, dim=-1)          # the cap M makes a full sort unnecessary
    cum = probs.cumsum(-1)
    ks = ((cum < tau).sum(-1) + 1).clamp(1, k_max).tolist()
    probs_l, order_l = probs.tolist(), order.tolist()
    for i, k in enumerate(ks):
        ids, ps = order_l[i][:k], probs_l[i][:k]
        for e in eos_ids:
            if e is not None and e < q.shape[1] and e not in ids:
                ids.append(int(e))
                ps.append(float(q[i, e]))
        out.append((ids, ps))
    return out


def causal_path_search(q: torch.Tensor, context: list, ngram, cfg: PathSearchConfig, eos_ids=()) -> list:
    """The best left-to-right path through the lattice of ``q`` [γ, V]; ``context`` is the committed
    prefix (its last n−1 tokens condition the n-gram)."""
    eos = set(int(e) for e in eos_ids if e is not None)
    cands = candidate_sets(q, cfg.tau, cfg.max_candidates, sorted(eos))
    hist = list(context)[-(ngram.n - 1):] if ngram is not None and ngram.n > 1 else []
    beams = [([], 0.0, False)]   # (tokens, summed score, ended)
    for ids, qs in cands:
        logq = np.log(np.maximum(np.asarray(qs, dtype=np.float64), 1e-12))
        new = []
        for toks, score, ended in beams:
            if ended:
                new.append((toks, score, True))
                continue
            if ngram is not None:
                ln = ngram.logprob(hist + toks, ids)
                s = cfg.lam * logq + (1 - cfg.lam) * ln
            else:
                s = logq
            top = np.argsort(-s, kind="stable")[: cfg.beam]   # only a beam's best expansions can survive
            for j in top:
                t = ids[j]
                new.append((toks + [t], score + float(s[j]), t in eos))
        new.sort(key=lambda b: b[1] / max(1, len(b[0])), reverse=True)
        beams = new[: cfg.beam]
        if all(b[2] for b in beams):
            break
    return beams[0][0]
