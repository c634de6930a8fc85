"""Greedy AR-verifier decoding reproduces the target's own greedy decoding exactly, for every
strategy, on tiny float64 models and on the reference pair."""
import warnings
from pathlib import Path

import pytest
import torch

import spiffy
from spiffy.ar import ARDecodeConfig, DLLMDrafter, NGramModel, generate_ar, hf_generate, make_drafter
from tests.ar_fixtures import oracle_drafter, tiny_target

warnings.filterwarnings("ignore")


PROMPTS = ["hello world", "what is 2+3?", "def f(x):", "abc", "the cat sat on the mat."]
STRATEGIES = {
    "plain": dict(draft_length=5),
    "path": dict(draft_length=5, path_search=True),
    "adaptive": dict(adaptive=True, min_draft=3, max_draft=7, grow=2),
    "tree": dict(draft_length=5, tree=3),
    "path+adaptive+tree": dict(path_search=True, adaptive=True, min_draft=3, max_draft=7, tree=2),
}


@pytest.fixture(scope="module")
def tiny():
    tgt = tiny_target()
    ids = [tgt.encode_prompt(p, chat=False) for p in PROMPTS]
    # a small n-gram over the tiny char vocabulary (path search needs one)
    text = " ".join(PROMPTS) * 3 + " the quick brown fox jumps over the lazy dog 0123456789"
    ng = NGramModel.from_sequences([tgt.tokenizer(text, add_special_tokens=False)["input_ids"]], 64)
    return tgt, ids, ng


@pytest.mark.parametrize("family", ["llada", "dream"])
@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_tiny_dllm_greedy_identical(tiny, family, strategy):
    tgt, ids, ng = tiny
    # a short prefix-cache refresh period so the cache is rebuilt within 16 tokens
    drafter = DLLMDrafter(spiffy.tiny_backend(family, dtype=torch.float64), tgt.vocab_size, refresh=5)
    for p in (ids if strategy == "plain" else ids[:3]):
        r = generate_ar(tgt, drafter, p, max_new_tokens=16, ngram=ng, **STRATEGIES[strategy])
        assert r.token_ids == hf_generate(tgt, p, 16)
        assert r.target_calls == r.rounds + 1 and r.drafter_calls >= 1


@pytest.mark.parametrize("strategy", ["plain", "tree"])
def test_tiny_dllm_without_prefix_cache(tiny, strategy):
    tgt, ids, ng = tiny
    drafter = make_drafter(spiffy.tiny_backend("dream", dtype=torch.float64), tgt, cache="none", extra_masks=4)
    for p in ids[:3]:
        r = generate_ar(tgt, drafter, p, max_new_tokens=16, **STRATEGIES[strategy])
        assert r.token_ids == hf_generate(tgt, p, 16)


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_oracle_drafter_partial_acceptance(tiny, strategy):
    """A drafter that mostly agrees with the target: acceptance paths and cache cropping/gathering."""
    tgt, ids, ng = tiny
    drafter = make_drafter(oracle_drafter(tgt, noise=0.15), tgt, cache="none")
    accepted = 0
    for p in ids[:3]:
        ref = hf_generate(tgt, p, 24)
        r = generate_ar(tgt, drafter, p, max_new_tokens=24, ngram=ng, **STRATEGIES[strategy])
        assert r.token_ids == ref
        accepted += sum(r.accepted)
    assert accepted > 0


def test_plain_loop_and_ar_drafter_identical(tiny):
    tgt, ids, _ = tiny
    same = make_drafter(tiny_target(), tgt)              # identical weights: everything is accepted
    other = make_drafter(tiny_target(seed=2), tgt)       # a different small AR model
    for p in ids:
        ref = hf_generate(tgt, p, 20)
        assert generate_ar(tgt, None, p, max_new_tokens=20).token_ids == ref
        r = generate_ar(tgt, same, p, max_new_tokens=20, draft_length=4)
        assert r.token_ids == ref
        if len(ref) == 20:
            assert r.mean_accepted > 3
        assert generate_ar(tgt, other, p, max_new_tokens=20, draft_length=3).token_ids == ref


def test_max_new_tokens_and_eos(tiny):
    tgt, ids, _ = tiny
    drafter = make_drafter(oracle_drafter(tgt, noise=0.0), tgt, cache="none")   # perfect drafter
    for n in (1, 2, 7):
        r = generate_ar(tgt, drafter, ids[0], max_new_tokens=n, draft_length=4)
        assert r.token_ids == hf_generate(tgt, ids[0], n)
        assert len(r.token_ids) <= n


# ---------------------------------------------------------------- reference pair
ROOT = Path(__file__).resolve().parents[1] / "models"
REF_T, REF_D, REF_A = ROOT / "spiffy-ar-ref", ROOT / "spiffy-dllm-ref", ROOT / "spiffy-ar-draft"


def test_reference_pair_greedy_identical():  # the reference pair is committed: never skipped
    from spiffy.ar import load_pair
    from spiffy.ar.ngram import DEFAULT_NGRAM_PATH

    target, drafter = load_pair(str(REF_T), str(REF_D), dtype="float64")
    prompts = ["Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
               "How many clips did Natalia sell altogether in April and May?",
               "Write a python function to reverse a string."]
    strategies = [dict(draft_length=8), dict(draft_length=8, tree=3),
                  dict(adaptive=True, min_draft=6, max_draft=12, grow=4)]
    assert DEFAULT_NGRAM_PATH.exists()  # shipped with the repository
    strategies.append(dict(draft_length=8, path_search=True))
    for text in prompts:
        ids = target.encode_prompt(text)
        ref = hf_generate(target, ids, 24)
        for kw in strategies:
            assert generate_ar(target, drafter, ids, max_new_tokens=24, **kw).token_ids == ref, kw
    from spiffy.ar.pair import load_drafter_model

    ar = make_drafter(load_drafter_model(str(REF_A), dtype="float64"), target)
    ids = target.encode_prompt(prompts[0])
    assert generate_ar(target, ar, ids, max_new_tokens=24, draft_length=4).token_ids == \
        hf_generate(target, ids, 24)
