"""Load a diffusion LM from a local checkpoint directory, a hub id, or a built-in name.

Real checkpoints (LLaDA, Dream) load into the project's own classes, which are registered with the
transformers Auto classes; ``trust_remote_code`` is never used.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import torch
from transformers import AutoConfig, AutoModel

from ..errors import ModelLoadError
from .adapter import is_adapter_dir, load_adapter_model
from .backend import DiffusionBackend
from .dream import DreamConfig, DreamModel
from .llada import LLaDAConfig, LLaDAModelLM
from .llama_dlm import LlamaDLMConfig, LlamaDLMModel

FAMILIES = {
    "llada": (LLaDAConfig, LLaDAModelLM, 0),
    "dream": (DreamConfig, DreamModel, 1),
    "llama_dlm": (LlamaDLMConfig, LlamaDLMModel, 1),
}

DEFAULT_MODEL_NAME = "spiffy-dllm-ref"


def _register():
    for cfg_cls, model_cls, _ in FAMILIES.values():
        try:
            AutoConfig.register(cfg_cls.model_type, cfg_cls)
            AutoModel.register(cfg_cls, model_cls)
        except ValueError:
            pass  # already registered


_register()


def models_dir() -> Path:
    """Where bundled reference checkpoints live: $SPIFFY_MODELS, else the repository's models/."""
    env = os.environ.get("SPIFFY_MODELS")
    if env:
        return Path(env)
    from ..resources import resource_dir

    return resource_dir("models")


def default_model_path() -> Path:
    return models_dir() / DEFAULT_MODEL_NAME


def family_of(model_type: str) -> str:
    mt = (model_type or "").lower()
    if mt in FAMILIES:
        return mt
    raise ModelLoadError(f"unsupported model_type {model_type!r}: spiffy knows {sorted(FAMILIES)}")


def resolve_dtype(dtype, device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    table = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
             "fp32": torch.float32, "float32": torch.float32, "fp64": torch.float64, "float64": torch.float64}
    if dtype not in table:
        raise ModelLoadError(f"unknown dtype {dtype!r}; choose one of {sorted(table)}")
    return table[dtype]


def bundled_model(name: str) -> Optional[Path]:
    """The folder of a model bundled under ``name`` (models/<name> with a config.json, from a checkout or a
    wheel), else None."""
    d = models_dir() / name
    return d if "/" not in name and (d / "config.json").exists() else None


def resolve_path(path_or_id: Optional[str]) -> Path:
    """A local directory, a named model prepared by `spiffy models fetch`, or a hub snapshot downloaded to
    the cache. Fails with a clear message."""
    if path_or_id is None:
        p = default_model_path()
        if not (p / "config.json").exists():
            raise ModelLoadError(
                f"the bundled reference model is missing at {p}; pass --model PATH_OR_ID or --model tiny-llada")
        return p
    from ..named_models import is_named, resolve_named

    p = Path(path_or_id).expanduser()
    bundled = bundled_model(path_or_id)
    if not p.is_dir() and bundled is not None:
        return bundled      # a bundled model by name (spiffy-dllm-ref, spiffy-smollm2-dlm), from a checkout or a wheel
    if is_named(path_or_id):
        return resolve_named(path_or_id)
    if p.is_dir():
        if not (p / "config.json").exists():
            raise ModelLoadError(f"{p} is a directory but has no config.json: not a model checkpoint")
        return p
    if p.exists() or path_or_id.startswith((".", "/", "~")) or path_or_id.count("/") != 1:
        raise ModelLoadError(f"model {path_or_id!r} not found: not a checkpoint directory and not a hub id (owner/name)")
    try:
        from huggingface_hub import snapshot_download

        local = snapshot_download(path_or_id, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"])
    except Exception as e:  # network down, unknown repo, gated …
        raise ModelLoadError(f"model {path_or_id!r} is not a local directory and could not be fetched from the hub: "
                             f"{type(e).__name__}: {e}") from None
    return Path(local)


def load_tokenizer(path: Path):
    files = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
    if not any((path / f).exists() for f in files):
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path))
    except Exception as e:
        raise ModelLoadError(f"tokenizer files in {path} could not be loaded: {type(e).__name__}: {e}") from None


def load_backend(path_or_id: Optional[str] = None, device: str = "cpu", dtype=None) -> DiffusionBackend:
    """Load a dLLM. ``path_or_id``: checkpoint directory, hub id, ``tiny-llada``/``tiny-dream``, or None
    for the bundled reference model."""
    from ..devices import check_device

    check_device(device)
    if path_or_id in ("tiny-llada", "tiny-dream"):
        from .tiny import tiny_backend

        return tiny_backend(path_or_id.split("-", 1)[1], dtype=resolve_dtype(dtype or "float32", device),
                            device=device)
    path = resolve_path(path_or_id)
    try:
        raw = json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"{path}/config.json is unreadable: {e}") from None
    family = family_of(raw.get("model_type"))
    cfg_cls, model_cls, shift = FAMILIES[family]
    torch_dtype = resolve_dtype(dtype, device)
    if is_adapter_dir(path):   # only what training changed, over a named base model
        model, base = load_adapter_model(path, cfg_cls, model_cls, torch_dtype)
        model = model.to(device).eval()
        tok = load_tokenizer(path) or load_tokenizer(base)
        return DiffusionBackend(model, family, tok, name=path.name, logit_shift=shift)
    if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
        raise ModelLoadError(f"{path} holds no weights (*.safetensors)")
    try:
        config = cfg_cls.from_pretrained(str(path))
        model = model_cls.from_pretrained(str(path), config=config, dtype=torch_dtype)
    except Exception as e:
        raise ModelLoadError(f"checkpoint at {path} could not be loaded: {type(e).__name__}: {e}") from None
    model = model.to(device).eval()
    tok = load_tokenizer(path)
    return DiffusionBackend(model, family, tok, name=path.name, logit_shift=shift)
