"""Loading a target and a drafter that share a tokenizer."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import ConfigError
from .ar_drafter import ARDrafter
from .drafter import DLLMDrafter
from .lookup import PromptLookupDrafter
from .target import ARTarget, load_causal_lm
from .vocab import check_tokenizers


def _is_dllm(path_or_id: str) -> bool:
    if path_or_id in ("tiny-llada", "tiny-dream"):
        return True
    cfg = Path(path_or_id).expanduser() / "config.json"
    if cfg.exists():
        try:
            mt = json.loads(cfg.read_text()).get("model_type", "")
        except (OSError, json.JSONDecodeError):
            return False
        from ..backends.loader import FAMILIES

        return str(mt).lower() in FAMILIES
    return False


LOOKUP_NAMES = ("ngram", "prompt-lookup")


def default_drafter_name(target_path) -> str | None:
    """The best drafter this project has for a named target (None: no preference, use --model / the
    bundled dLLM)."""
    from ..named_models import spec_of

    spec = spec_of(target_path)
    return spec.default_drafter if spec is not None else None


def make_drafter(drafter, target: ARTarget, steps: int = 1, temperature: float = 0.0, cache: str = "prefix",
                 extra_masks: int = 0):
    """Wrap a loaded drafter (a DiffusionBackend or an ARTarget, or the name ``ngram`` for model-free
    prompt lookup) after checking its tokenizer."""
    from ..backends.backend import DiffusionBackend
    from .block_drafter import BlockDrafter
    from .block_model import BlockDrafterModel

    if isinstance(drafter, str) and drafter.lower() in LOOKUP_NAMES:
        return PromptLookupDrafter(target.vocab_size)
    if isinstance(drafter, (DLLMDrafter, ARDrafter, PromptLookupDrafter, BlockDrafter)):
        return drafter
    if isinstance(drafter, BlockDrafterModel):
        if steps != 1:
            raise ConfigError("a block drafter fills its block in one forward: use --drafter-steps 1")
        return BlockDrafter(drafter, target, temperature=temperature)
    tok = getattr(drafter, "tokenizer", None)
    check_tokenizers(target.tokenizer, tok, target.name, getattr(drafter, "name", "drafter"))
    if isinstance(drafter, DiffusionBackend):
        return DLLMDrafter(drafter, target.vocab_size, steps=steps, temperature=temperature, cache=cache,
                           extra_masks=extra_masks)
    if isinstance(drafter, ARTarget):
        return ARDrafter(drafter, target.vocab_size, temperature=temperature, stop_ids=target.stop_ids)
    raise ConfigError(f"unsupported drafter type {type(drafter).__name__}: pass a diffusion backend or an ARTarget")


def _bundled_block_drafter(path_or_id: str):
    """The folder of a block drafter given by path or by bundled name, else None."""
    from ..backends.loader import bundled_model
    from .block_model import is_block_drafter

    for p in (Path(path_or_id).expanduser(), bundled_model(path_or_id)):
        if p is not None and is_block_drafter(p):
            return p
    return None


def load_drafter_model(path_or_id: str, device: str = "cpu", dtype=None):
    """A loaded drafter model; the name ``ngram`` (prompt lookup, no model) is passed through."""
    if isinstance(path_or_id, str) and path_or_id.lower() in LOOKUP_NAMES:
        return path_or_id.lower()
    block = _bundled_block_drafter(str(path_or_id))
    if block is not None:
        from ..backends.loader import resolve_dtype
        from .block_model import BlockDrafterModel

        return BlockDrafterModel.load(block, device=device, dtype=resolve_dtype(dtype, device))
    if _is_dllm(path_or_id):
        from ..backends import load_backend

        return load_backend(path_or_id, device=device, dtype=dtype)
    return load_causal_lm(path_or_id, device=device, dtype=dtype, name=Path(path_or_id).name or None)


def load_pair(target_path: str, drafter_path: str, device: str = "cpu", dtype=None, steps: int = 1,
              temperature: float = 0.0, cache: str = "prefix"):
    """(ARTarget, drafter) — prompt lookup for ``ngram``, a BlockDrafter for a block drafter trained for the
    target, a DLLMDrafter for a LLaDA/Dream checkpoint, else a classic ARDrafter."""
    target = load_causal_lm(target_path, device=device, dtype=dtype)
    drafter = make_drafter(load_drafter_model(drafter_path, device, dtype), target, steps, temperature, cache)
    return target, drafter
