"""The one entry point for decoding (`spiffy.generate`): baseline, or Spiffy when a speculative configuration
is given. The module is named `generation` so that importing it never replaces the package attribute
`spiffy.generate` (the function) with a module."""
from __future__ import annotations

from typing import Optional, Sequence, Union

from .errors import ConfigError
from .result import GenerationResult
from .sampling.baseline import generate_baseline
from .sampling.config import GenerationConfig


def _as_prompt_ids(backend, prompt, chat: bool) -> list[list[int]]:
    if isinstance(prompt, str):
        return [backend.encode_prompt(prompt, chat)]
    if isinstance(prompt, Sequence) and prompt and isinstance(prompt[0], int):
        return [list(prompt)]
    if isinstance(prompt, Sequence) and prompt:
        out = []
        for p in prompt:
            out.extend(_as_prompt_ids(backend, p, chat))
        return out
    raise ConfigError("the prompt is empty")


def generate(backend, prompt: Union[str, list], config: Optional[GenerationConfig] = None, speculative=None,
             chat: bool = True, **overrides) -> GenerationResult:
    """Decode ``prompt`` (text, token ids, or a list of either for a left-padded batch).

    ``config`` fields can also be given as keyword overrides. With ``speculative`` (a
    ``spiffy.speculative.SpeculativeConfig``) the Spiffy decoder runs; its output equals the baseline's.
    """
    cfg = GenerationConfig(**{**(config.to_dict() if config else {}), **overrides})
    prompts = _as_prompt_ids(backend, prompt, chat)
    if any(len(p) == 0 for p in prompts):
        raise ConfigError("the prompt is empty")
    if speculative is None:
        return generate_baseline(backend, prompts, cfg)
    from .speculative import generate_speculative

    return generate_speculative(backend, prompts, cfg, speculative)
