"""Prompt lookup (model-free drafting) and the cost gate, on their own and on a tiny target."""
import warnings

import pytest
import torch

from spiffy.ar import ARDecodeConfig, PromptLookupDrafter, generate_ar, hf_generate
from spiffy.ar.gate import DraftGate
from tests.ar_fixtures import tiny_target
from spiffy.errors import ConfigError

warnings.filterwarnings("ignore")


def test_candidates_longest_suffix_then_most_recent():
    d = PromptLookupDrafter(100, max_ngram=3)
    #        0  1  2  3  4  5  6  7  8  9 10 11
    text = [5, 6, 7, 8, 9, 1, 6, 7, 2, 3, 6, 7]
    c = d.candidates(text, gamma=3)
    # suffix (6, 7) occurs at 1 and 6 (the suffix itself excluded); the most recent first; then (7) alone
    assert c[0] == (2, [2, 3, 6])
    assert c[1] == (2, [8, 9, 1])
    assert all(n == 1 for n, _ in c[2:])
    assert d.candidates([1, 2, 3], gamma=4) == []          # no earlier occurrence of any suffix


def test_draft_lattice_and_key():
    d = PromptLookupDrafter(20, max_ngram=2)
    text = [1, 2, 3, 4, 1, 2, 5, 1, 2]
    dr = d.draft(text, 2)
    assert dr.tokens == [5, 1] and dr.key == 2
    assert torch.allclose(dr.q.sum(-1), torch.ones(2))
    assert dr.q[0, 5] == dr.q[0, 3] and dr.conf[0] == dr.q[0, 5]    # both matches have suffix length 2
    empty = d.draft([1, 2, 3], 4)
    assert empty.tokens == [] and empty.key is None and d.calls == 0


def test_trie_shares_prefixes_and_stops():
    d = PromptLookupDrafter(20, max_ngram=1)
    text = [9, 1, 2, 3, 9, 1, 2, 4, 9, 7, 9]
    tree, best, key = d.draft_tree(text, 3, branches=3, stop_ids=[7])
    # continuations after 9: (7, 9) most recent (cut after stop 7), (1, 2, 4), (1, 2, 3)
    assert best == [7, 9] and key == 1
    assert tree.tokens == [7, 1, 2, 4, 3]
    assert tree.parents == [-1, -1, 1, 2, 2]


def test_bad_lookup_settings():
    with pytest.raises(ConfigError):
        PromptLookupDrafter(10, max_ngram=1, min_ngram=2)
    with pytest.raises(ConfigError):
        PromptLookupDrafter(10).candidates([1, 2], 0)


def test_gate_refuses_unpaying_keys_and_explores():
    g = DraftGate(cost=1.8, explore_every=3, prior_accepted=1.0)
    assert g.allow(None) and g.allow(1)             # unknown key: prior 1 token -> 2 >= 1.8
    for _ in range(10):
        g.observe(1, 0)                               # key 1 is never accepted
    decisions = [g.allow(1) for _ in range(6)]
    assert decisions == [False, False, True, False, False, True]   # tried again every 3rd refusal
    g.observe(3, 4)
    assert g.allow(3)
    with pytest.raises(ConfigError):
        DraftGate(cost=-1)


@pytest.fixture(scope="module")
def tgt():
    return tiny_target(seed=4)


def test_lookup_greedy_identity_on_tiny_target(tgt):
    d = PromptLookupDrafter(tgt.vocab_size)
    prompt = tgt.encode_prompt("abcabcabc abc", chat=False)
    ref = hf_generate(tgt, prompt, 40)
    for kw in (dict(), dict(gate=0.0), dict(tree=3), dict(adaptive=True, min_draft=2, max_draft=6),
               dict(draft_length=1)):
        res = generate_ar(tgt, d, prompt, ARDecodeConfig(max_new_tokens=40, **kw))
        assert res.token_ids == ref, kw
        assert res.drafter_calls == 0 and res.target_calls == res.rounds + 1


def test_gate_off_verifies_every_draft(tgt):
    d = PromptLookupDrafter(tgt.vocab_size)
    prompt = tgt.encode_prompt("abcabcabc abc", chat=False)
    res = generate_ar(tgt, d, prompt, max_new_tokens=40, gate=0.0)
    assert res.gated == 0
    with pytest.raises(ConfigError):
        ARDecodeConfig(gate=-1.0).check()
