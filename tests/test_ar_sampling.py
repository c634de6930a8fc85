"""Speculative sampling is exact: the sampled output distribution is the target's own (chi-square),
and deliberately broken acceptance rules are caught by the same test."""
import itertools
import warnings

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

import spiffy
from spiffy.ar import DLLMDrafter, generate_ar
from tests.ar_fixtures import tiny_target

warnings.filterwarnings("ignore")

V, NEW, PROMPT, TEMP = 3, 3, [0, 2, 1], 1.0


@pytest.fixture(scope="module")
def models():
    tgt = tiny_target(vocab=V, seed=3, stop_ids=[], scale=2.0)
    be = spiffy.tiny_backend("llada", seed=5, dtype=torch.float64, vocab=V + 1)   # mask id = V
    return tgt, be


_EXACT = {}


def exact_distribution(tgt):
    if id(tgt) in _EXACT:
        return _EXACT[id(tgt)]
    probs = {}
    with torch.no_grad():
        for seq in itertools.product(range(V), repeat=NEW):
            ids = torch.tensor([PROMPT + list(seq)])
            p = torch.softmax(tgt.model(ids).logits[0].double() / TEMP, -1)
            probs[seq] = float(np.prod([p[len(PROMPT) - 1 + i, t] for i, t in enumerate(seq)]))
    _EXACT[id(tgt)] = probs
    return probs


def sample_counts(tgt, drafter, n, **kw):
    counts = {}
    for s in range(n):
        r = generate_ar(tgt, drafter, PROMPT, max_new_tokens=NEW, temperature=TEMP, seed=s, **kw)
        counts[tuple(r.token_ids)] = counts.get(tuple(r.token_ids), 0) + 1
    return counts


def pvalue(counts, probs, n):
    keys = sorted(probs, key=lambda k: -probs[k])
    exp = np.array([probs[k] * n for k in keys])
    obs = np.array([counts.get(k, 0) for k in keys], dtype=float)
    assert sum(counts.values()) == n and set(counts) <= set(probs)
    # pool the rare outcomes so every bin expects >= 5
    e, o, acc_e, acc_o = [], [], 0.0, 0.0
    for ei, oi in zip(exp, obs):
        acc_e += ei
        acc_o += oi
        if acc_e >= 5:
            e.append(acc_e)
            o.append(acc_o)
            acc_e = acc_o = 0.0
    if acc_e > 0:
        e[-1] += acc_e
        o[-1] += acc_o
    return chisquare(o, e).pvalue


N = 300


@pytest.mark.parametrize("kw", [dict(draft_length=2), dict(draft_length=2, drafter_steps=2),
                                dict(draft_length=2, tree=2)], ids=["chain", "chain-2steps", "tree"])
def test_sampling_matches_target_distribution(models, kw):
    tgt, be = models
    drafter = DLLMDrafter(be, tgt.vocab_size, steps=kw.pop("drafter_steps", 1), temperature=TEMP)
    probs = exact_distribution(tgt)
    counts = sample_counts(tgt, drafter, N, **kw)
    p = pvalue(counts, probs, N)
    print("exact", kw, p)
    assert p > 1e-3


@pytest.mark.parametrize("kw", [dict(draft_length=2, gate=0.0), dict(draft_length=2, tree=2, gate=0.0),
                                dict(draft_length=2, gate=1.8)], ids=["chain", "trie", "gated"])
def test_prompt_lookup_sampling_matches_target_distribution(models, kw):
    """Prompt-lookup drafts are point masses: accepted with probability p(d), else p without d."""
    from spiffy.ar import PromptLookupDrafter

    tgt, _ = models
    drafter = PromptLookupDrafter(tgt.vocab_size, max_ngram=2)
    probs = exact_distribution(tgt)
    counts = sample_counts(tgt, drafter, N, **kw)
    p = pvalue(counts, probs, N)
    print("lookup", kw, p)
    assert p > 1e-3


@pytest.mark.parametrize("rule", ["always", "ratio_no_residual"])
def test_broken_acceptance_is_rejected(models, rule):
    tgt, be = models
    drafter = DLLMDrafter(be, tgt.vocab_size, temperature=TEMP)
    probs = exact_distribution(tgt)
    counts = sample_counts(tgt, drafter, N, draft_length=2, accept_rule=rule)
    p = pvalue(counts, probs, N)
    print("broken", rule, p)
    assert p < 1e-3


def test_plain_target_sampling_is_seeded(models):
    tgt, _ = models
    a = generate_ar(tgt, None, PROMPT, max_new_tokens=NEW, temperature=TEMP, seed=7).token_ids
    b = generate_ar(tgt, None, PROMPT, max_new_tokens=NEW, temperature=TEMP, seed=7).token_ids
    assert a == b
