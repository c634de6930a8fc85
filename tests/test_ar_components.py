"""Clear errors, the n-gram model, path search and the adaptive draft length."""
import warnings

import numpy as np
import pytest
import torch

import spiffy
from spiffy.ar import (AdaptiveLength, ARDecodeConfig, DLLMDrafter, NGramModel, PathSearchConfig,
                       causal_path_search, check_tokenizers, generate_ar, make_drafter)
from spiffy.ar.ngram import build_ngram
from spiffy.ar.path_search import candidate_sets
from tests.ar_fixtures import tiny_target
from spiffy.errors import ArtifactError, ConfigError

warnings.filterwarnings("ignore")


def _other_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    table = {c: i for i, c in enumerate("zyxwvutsrqponmlkjihgfedcba0123456789")}
    tk = Tokenizer(models.WordLevel(table, unk_token="0"))
    tk.pre_tokenizer = pre_tokenizers.Split(" ", behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="0")


def test_mismatched_tokenizers_refused():
    tgt = tiny_target(tokenizer=_other_tokenizer())
    with pytest.raises(ConfigError, match="tokenizer"):
        make_drafter(spiffy.tiny_backend("llada", dtype=torch.float64), tgt)
    with pytest.raises(ConfigError, match="tokenizer"):
        check_tokenizers(_other_tokenizer(), spiffy.backends.tiny.tiny_tokenizer())


def test_drafter_without_mask_token():
    be = spiffy.tiny_backend("llada", dtype=torch.float64)
    be.mask_id = None
    with pytest.raises(ConfigError, match="mask"):
        DLLMDrafter(be, 64)
    with pytest.raises(ConfigError, match="mask token"):
        spiffy.DiffusionBackend(spiffy.tiny_backend("llada").model.__class__(
            spiffy.backends.tiny.tiny_llada_config(mask_token_id=None)), "llada")


def test_bad_draft_length():
    tgt = tiny_target()
    d = make_drafter(spiffy.tiny_backend("llada", dtype=torch.float64), tgt)
    for bad in (0, -3):
        with pytest.raises(ConfigError, match="γ"):
            generate_ar(tgt, d, [1, 2, 3], draft_length=bad)
        with pytest.raises(ConfigError, match=">= 1"):
            d.draft([1, 2, 3], bad)
    with pytest.raises(ConfigError):
        ARDecodeConfig(adaptive=True, min_draft=10, max_draft=5).check()


def test_drafter_masks_ids_the_target_lacks():
    tgt = tiny_target(vocab=40, tokenizer=None)
    d = DLLMDrafter(spiffy.tiny_backend("llada", dtype=torch.float64), tgt.vocab_size)
    dr = d.draft([1, 2, 3], 12)
    assert all(t < 40 for t in dr.tokens) and dr.q.shape == (12, 40)
    assert torch.allclose(dr.q.sum(-1), torch.ones(12, dtype=torch.float64))


def test_drafter_steps_with_the_engine_rule_and_keyed_noise():
    """A sampled one-step dLLM draft is the engine's own step (denoise_step, LLaDA rule, left to right)
    on the drafter's logits with the noise of key (seed, prefix length, 0); the seed matters."""
    from spiffy.sampling.config import GenerationConfig
    from spiffy.sampling.noise import step_generator
    from spiffy.sampling.step import denoise_step

    be = spiffy.tiny_backend("llada", dtype=torch.float64)
    d = DLLMDrafter(be, be.vocab_size, temperature=1.0, cache="none")
    prefix, g = [1, 2, 3, 4], 6
    x = torch.tensor([prefix + [be.mask_id] * g])
    logits = be.forward(x).logits[:, len(prefix):]
    logits = logits.masked_fill(~d.allowed, float("-inf"))
    rule = GenerationConfig(gen_length=1, block_length=1, temperature=1.0, remasking="left_to_right")
    for seed in (0, 1):
        want = denoise_step(logits, x[:, len(prefix):], be.mask_id, rule, "llada", [g],
                            step_generator(seed, len(prefix), 0, be.device)).tokens[0].tolist()
        assert d.draft(prefix, g, seed=seed, sample=True).tokens == want
    assert {tuple(d.draft(prefix, g, seed=s, sample=True).tokens) for s in range(6)} != {tuple(want)}


def test_ngram_is_a_distribution_and_uses_context():
    seqs = [[0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 4]] * 3
    ng = NGramModel.from_sequences(seqs, 6, n=3)
    for ctx in ([], [0], [0, 1], [5, 5], [3, 0]):
        p = ng.prob(ctx, np.arange(6))
        assert abs(p.sum() - 1) < 1e-9
    assert ng.prob([0, 1], [2])[0] > ng.prob([0, 1], [3])[0]


def test_ngram_roundtrip_and_errors(tmp_path):
    ng = NGramModel.from_sequences([[1, 2, 3, 1, 2, 4]], 8, fingerprint="abc")
    ng.save(tmp_path / "m.npz")
    back = NGramModel.load(tmp_path / "m.npz")
    assert np.allclose(back.prob([1, 2], np.arange(8)), ng.prob([1, 2], np.arange(8)))
    with pytest.raises(ArtifactError, match="missing"):
        NGramModel.load(tmp_path / "none.npz")
    (tmp_path / "bad.npz").write_bytes(b"junk")
    with pytest.raises(ArtifactError, match="corrupt"):
        NGramModel.load(tmp_path / "bad.npz")
    with pytest.raises(ArtifactError, match="different tokenizer"):
        NGramModel.load(tmp_path / "m.npz", spiffy.backends.tiny.tiny_tokenizer())
    with pytest.raises(ConfigError, match="data directory"):
        build_ngram(spiffy.backends.tiny.tiny_tokenizer(), data_dir=tmp_path / "nope")


def test_candidate_sets_and_path_search():
    q = torch.tensor([[0.5, 0.3, 0.1, 0.1, 0.0], [0.9, 0.05, 0.05, 0.0, 0.0], [0.3, 0.28, 0.22, 0.2, 0.0]],
                     dtype=torch.float64)
    sets = candidate_sets(q, 0.8, 2, eos_ids=[4])
    assert [s[0] for s in sets] == [[0, 1, 4], [0, 4], [0, 1, 4]]
    # the n-gram strongly prefers 1 after 0 and 2 after 1: it overrides the lattice's argmax
    ng = NGramModel.from_sequences([[0, 1, 2, 0, 1, 2, 0, 1, 2]] * 5, 5)
    path = causal_path_search(q, [2], ng, PathSearchConfig(beam=3, tau=0.99, max_candidates=4, lam=0.3),
                              eos_ids=[4])
    assert path == [0, 1, 2]
    # with lambda = 1 the path is the per-position argmax; EOS ends the path
    q2 = q.clone()
    q2[1] = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0])
    assert causal_path_search(q2, [2], ng, PathSearchConfig(lam=1.0), eos_ids=[4]) == [0, 4]


def test_adaptive_length():
    a = AdaptiveLength()
    assert a.gamma == 20
    assert a.observe(20, 20) == 30          # everything accepted: +10, clipped to 30
    assert a.observe(3, 1) == 20            # EOS early and little accepted: back to the floor
    b = AdaptiveLength(min_len=2, max_len=50, grow=10)
    b.gamma, b.drafted_ema = 8, 8.0
    assert b.observe(8, 2) == 8
    assert b.observe(4, 1) == 6
