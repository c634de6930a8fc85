"""Bad input gives a clear error."""
import pytest
import torch

from spiffy import ConfigError, generate
from spiffy.backends.backend import DiffusionBackend
from spiffy.backends.llada import LLaDAModelLM
from spiffy.backends.tiny import tiny_llada_config, tiny_tokenizer


@pytest.mark.parametrize("kw,msg", [
    (dict(gen_length=30, block_length=8), "not divisible by block_length"),
    (dict(gen_length=32, block_length=8, steps=10), "not divisible by the number of blocks"),
    (dict(gen_length=16, block_length=8, steps=32), "exceed gen_length"),
    (dict(gen_length=16, block_length=8, tokens_per_step=3), "must divide block_length"),
    (dict(gen_length=16, block_length=8, threshold=0.0), r"threshold must lie in \(0, 1\]"),
    (dict(gen_length=16, block_length=8, threshold=1.5), r"threshold must lie in \(0, 1\]"),
    (dict(gen_length=16, block_length=8, cache="full"), "cache must be one of"),
    (dict(gen_length=16, block_length=8, temperature=-1), "temperature"),
])
def test_bad_config(tiny_llada, kw, msg):
    with pytest.raises(ConfigError, match=msg):
        generate(tiny_llada, [1, 2, 3], **kw)


def test_prompt_longer_than_context(tiny_llada):
    with pytest.raises(ConfigError, match="exceeds the model's context of 512"):
        generate(tiny_llada, list(range(50)) * 10, gen_length=32, block_length=8)


def test_empty_prompt(tiny_llada):
    with pytest.raises(ConfigError, match="empty"):
        generate(tiny_llada, [], gen_length=16, block_length=8)


def test_tokenizer_without_mask_token():
    model = LLaDAModelLM(tiny_llada_config(mask_token_id=None))
    tok = tiny_tokenizer()
    tok.mask_token = None
    with pytest.raises(ConfigError, match="no mask token id"):
        DiffusionBackend(model, "llada", tok, name="m")
    # and the tokenizer's mask token is used when the config has none
    be = DiffusionBackend(model, "llada", tiny_tokenizer(), name="m")
    assert be.mask_id == 63


def test_mask_id_outside_vocab():
    model = LLaDAModelLM(tiny_llada_config(mask_token_id=126336))
    with pytest.raises(ConfigError, match="outside the vocabulary"):
        DiffusionBackend(model, "llada", None, name="m")


def test_text_prompt_needs_tokenizer():
    from spiffy.backends.tiny import tiny_backend

    be = tiny_backend("llada", dtype=torch.float64)
    be.tokenizer = None
    with pytest.raises(ConfigError, match="no tokenizer"):
        generate(be, "hello", gen_length=16, block_length=8)
