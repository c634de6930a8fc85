"""Prompt lookup: a model-free drafter that copies what followed an earlier occurrence of the text's
last few tokens (the prompt and everything generated so far).

For the suffix of the committed text, of length ``max_ngram`` down to ``min_ngram``, every earlier
occurrence is a *match* and the tokens after it are a candidate continuation. Candidates are ranked
longest suffix first, then most recent. The chain draft is the best candidate; a draft tree is the trie
of the ``branches`` best distinct candidates; the per-position lattice ``q`` (for path search) weights
each candidate's token at each offset by its suffix length. A draft's gate key
(:mod:`spiffy.ar.gate`) is the length of the matched suffix. Drafts are deterministic, so exact
speculative sampling verifies them as point masses. Drafting runs no model: ``calls`` stays 0.
"""
from __future__ import annotations

import time
from typing import Optional

import numpy as np
import torch

from ..errors import ConfigError
from .drafter import Draft
from .tree import DraftTree


class PromptLookupDrafter:
    kind = "lookup"
    deterministic = True   # verified as point masses (no drafter distribution to test against)
    name = "ngram"

    def __init__(self, target_vocab: int, max_ngram: int = 3, min_ngram: int = 1, max_matches: int = 8):
        if not 1 <= min_ngram <= max_ngram:
            raise ConfigError(f"prompt lookup needs 1 <= min n-gram <= max n-gram (got {min_ngram}, {max_ngram})")
        if max_matches < 1:
            raise ConfigError(f"prompt lookup needs max matches >= 1 (got {max_matches})")
        self.target_vocab = int(target_vocab)
        self.max_ngram = int(max_ngram)
        self.min_ngram = int(min_ngram)
        self.max_matches = int(max_matches)
        self.calls = 0          # model forwards: none
        self.seconds = 0.0

    def reset(self):
        pass

    def candidates(self, prefix, gamma: int, limit: Optional[int] = None) -> list:
        """[(suffix length n, continuation tokens)], best first, distinct continuations, each ≤ γ long."""
        if gamma < 1:
            raise ConfigError(f"draft length must be >= 1 (got {gamma})")
        a = np.asarray(prefix, dtype=np.int64)
        L = a.size
        limit = self.max_matches if limit is None else limit
        out, seen_starts, seen_conts = [], set(), set()
        for n in range(min(self.max_ngram, L - 1), self.min_ngram - 1, -1):
            win = np.lib.stride_tricks.sliding_window_view(a[: L - 1], n)   # windows ending before the suffix
            hits = np.flatnonzero((win == a[L - n:]).all(axis=1))
            for i in hits[::-1]:                                            # most recent first
                start = int(i) + n
                if start in seen_starts:
                    continue
                seen_starts.add(start)
                cont = tuple(int(t) for t in a[start: start + gamma])
                if cont and cont not in seen_conts:
                    seen_conts.add(cont)
                    out.append((n, list(cont)))
                    if len(out) >= limit:
                        return out
        return out

    def draft(self, prefix, gamma: int, seed: int = 0, sample: bool = False) -> Draft:
        t0 = time.perf_counter()
        cands = self.candidates(prefix, gamma)
        toks = cands[0][1] if cands else []
        q = torch.zeros(len(toks), self.target_vocab, dtype=torch.float32)
        for n, cont in cands:
            for i, t in enumerate(cont[: len(toks)]):
                if t < self.target_vocab:
                    q[i, t] += float(n)
        if toks:
            q /= q.sum(-1, keepdim=True)
        conf = q[torch.arange(len(toks)), torch.tensor(toks, dtype=torch.long)] if toks else q.new_zeros(0)
        self.seconds += time.perf_counter() - t0
        return Draft(list(toks), q, conf, key=cands[0][0] if cands else None)

    def draft_tree(self, prefix, gamma: int, branches: int, stop_ids=()) -> tuple[DraftTree, list, Optional[int]]:
        """The trie of the ``branches`` best candidates (each cut after a stop token), the best chain, and
        its gate key (the matched suffix length)."""
        t0 = time.perf_counter()
        cands = self.candidates(prefix, gamma, limit=max(1, branches))
        tree, index = DraftTree(), {}
        stop = set(int(s) for s in stop_ids)
        for _, cont in cands:
            node = -1
            for t in cont:
                key = (node, t)
                if key not in index:
                    tree.tokens.append(t)
                    tree.parents.append(node)
                    index[key] = len(tree.tokens) - 1
                node = index[key]
                if t in stop:
                    break
        self.seconds += time.perf_counter() - t0
        return tree, (cands[0][1] if cands else []), (cands[0][0] if cands else None)
