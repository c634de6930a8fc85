"""Packed verification: each draft's logits equal a separate forward of that draft state.

Dual cache: exact (allclose at float64 precision). Cache none/prefix on a bidirectional model: the
draft attends to positions computed with the current block, so its logits differ; the test measures
the difference and checks the real state's own logits stay exact.
"""
import pytest
import torch

from spiffy import GenerationConfig
from spiffy.sampling.session import DecodeSession
from spiffy.speculative.verifier import verify


def verify_packed(s, b, states, masked_only=False):
    return verify(s, b, [(0, states)], "packed", masked_only)[0]


def verify_batch(s, b, states, masked_only=False):
    return verify(s, b, [(0, states)], "batch", masked_only)[0]

from .conftest import random_prompts


def setup(backend, cache, cfg_scale=0.0, prompt_len=7, seed=0):
    prompt = random_prompts(1, seed=seed, lo=prompt_len, hi=prompt_len + 1)[0]
    cfg = GenerationConfig(gen_length=24, block_length=8, cache=cache, cfg_scale=cfg_scale)
    s = DecodeSession(backend, [prompt], cfg)
    # decode block 1 after a filled block 0, so the replaced block has generated tokens before it and
    # masks after it
    s.x[:, s.P:s.P + 8] = torch.randint(0, 58, (1, 8), generator=torch.Generator().manual_seed(seed))
    s.begin_block(1)
    b0, b1 = s.span(1)
    root = s.x[:, b0:b1].clone()
    root[0, [1, 4]] = torch.tensor([3, 9])
    g = torch.Generator().manual_seed(seed + 1)
    drafts = root.repeat(5, 1)
    for i in range(5):
        pos = torch.randperm(8, generator=g)[: i + 1]
        drafts[i, pos] = torch.randint(0, 58, (i + 1,), generator=g)
    return s, torch.cat([root, drafts])


@pytest.mark.parametrize("family", ["llada", "dream"])
@pytest.mark.parametrize("cfg_scale", [0.0, 1.0])
def test_packed_equals_separate_forwards_under_dual_cache(family, cfg_scale, tiny_llada, tiny_dream):
    backend = tiny_llada if family == "llada" else tiny_dream
    s, states = setup(backend, "dual", cfg_scale)
    packed = verify_packed(s, 1, states)
    for i in range(states.shape[0]):
        single = verify_batch(s, 1, states[i:i + 1])[0]
        torch.testing.assert_close(packed[i], single, rtol=0, atol=1e-10)
    # and the single forward of the real state is the baseline's own step computation
    torch.testing.assert_close(packed[0], s.block_logits(1, states[:1])[0], rtol=0, atol=1e-10)
    # logits at the real state's masked positions only (what the decoder computes): the same rows
    masked = states[0] == backend.mask_id
    assert 0 < int(masked.sum()) < states.shape[1]
    for only in (verify_packed(s, 1, states, masked_only=True), verify_batch(s, 1, states, masked_only=True)):
        torch.testing.assert_close(only[:, masked], packed[:, masked], rtol=0, atol=1e-10)
        assert not only[:, ~masked].any()


@pytest.mark.parametrize("family", ["llada", "dream"])
@pytest.mark.parametrize("cache", ["none", "prefix"])
def test_packed_without_frozen_context_is_near_lossless(family, cache, tiny_llada, tiny_dream):
    backend = tiny_llada if family == "llada" else tiny_dream
    s, states = setup(backend, cache)
    packed = verify_packed(s, 1, states)
    batch = verify_batch(s, 1, states)
    torch.testing.assert_close(packed[0], batch[0], rtol=0, atol=1e-10)   # the real state: exact
    diff = (packed[1:] - batch[1:]).abs().max().item()
    # measured, not assumed: the drafts see a suffix computed with the current block
    assert 0 < diff < 1e3
    print(f"{family}/{cache}: max |logit difference| of packed drafts = {diff:.3g}")
