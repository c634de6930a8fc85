"""Batched prompts (left padding + attention mask) and the early-stop option."""
import pytest
import torch

from spiffy import generate
from spiffy.backends.tiny import tiny_backend

from .conftest import random_prompts


@pytest.mark.parametrize("family", ["llada", "dream"])
@pytest.mark.parametrize("cache,temp,cfg", [("none", 0.0, 0.0), ("prefix", 0.7, 0.0), ("dual", 0.0, 0.0),
                                            ("none", 0.9, 1.0), ("dual", 0.0, 0.0)])
def test_answer_in_batch_equals_answer_alone(family, cache, temp, cfg, tiny_llada, tiny_dream):
    be = tiny_llada if family == "llada" else tiny_dream
    prompts = random_prompts(4, seed=11, lo=2, hi=14)
    kw = dict(gen_length=16, block_length=8, cache=cache, temperature=temp, cfg_scale=cfg, seed=4)
    batch = generate(be, prompts, **kw)
    assert len(batch.token_ids) == 4
    for i, p in enumerate(prompts):
        alone = generate(be, p, **kw)
        assert batch.token_ids[i] == alone.token_ids[0], (i, p)


def test_threshold_batch_rows_independent(tiny_llada):
    prompts = random_prompts(3, seed=2)
    batch = generate(tiny_llada, prompts, gen_length=16, block_length=8, threshold=0.2)
    for i, p in enumerate(prompts):
        assert batch.token_ids[i] == generate(tiny_llada, p, gen_length=16, block_length=8, threshold=0.2).token_ids[0]


def eos_heavy_backend():
    """A tiny model whose head favours EOS wherever it would predict its most common token."""
    be = tiny_backend("llada", seed=3, dtype=torch.float64)
    t = be.model.model.transformer
    with torch.no_grad():
        out = generate(be, [1, 2, 3], gen_length=32, block_length=8).token_ids[0]
        common = max(set(out), key=out.count)
        t.ff_out.weight[be.eos_id] = t.ff_out.weight[common] * 1.5
    return be


def test_early_stop():
    be = eos_heavy_backend()
    prompt = [1, 2, 3]
    full = generate(be, prompt, gen_length=32, block_length=8)
    assert be.eos_id in full.token_ids[0]
    first = full.token_ids[0].index(be.eos_id)
    stopped = generate(be, prompt, gen_length=32, block_length=8, early_stop=True)
    end = (first // 8 + 1) * 8
    assert stopped.token_ids[0][:end] == full.token_ids[0][:end]
    assert all(t == be.eos_id for t in stopped.token_ids[0][end:])
    assert stopped.nfe == end and len(stopped.block_steps) == end // 8
    if end < 32:
        assert stopped.nfe < full.nfe


def test_eos_options():
    be = eos_heavy_backend()
    no_eos = generate(be, [1, 2, 3], gen_length=32, block_length=8, logits_eos_inf=True)
    assert be.eos_id not in no_eos.token_ids[0]
    late = generate(be, [1, 2, 3], gen_length=32, block_length=8, confidence_eos_eot_inf=True)
    assert be.mask_id not in late.token_ids[0]
