"""Baseline samplers: configuration, keyed noise, commit schedules, the step rule, the decode loop.
Public names are imported on first use (so the CLI's help can read GenerationConfig without torch)."""
from .._lazy import lazy_attributes

_NAMES = {"GenerationConfig": ".config", "generate_baseline": ".baseline", "DecodeSession": ".session",
          "denoise_step": ".step"}
__all__ = list(_NAMES)
__getattr__, __dir__ = lazy_attributes(__name__, _NAMES, globals())
