"""Spiffy: lossless speculative decoding for diffusion language models.

Public names are imported on first use, so ``import spiffy`` (and ``spiffy --help``) stays light.
"""
from ._lazy import lazy_attributes

__version__ = "0.1.0"

_NAMES = {
    "generate": ".generation", "GenerationConfig": ".sampling.config", "GenerationResult": ".result",
    "load_backend": ".backends", "tiny_backend": ".backends", "DiffusionBackend": ".backends",
    "SpiffyError": ".errors", "ConfigError": ".errors", "ModelLoadError": ".errors", "ArtifactError": ".errors",
}
__all__ = list(_NAMES)
__getattr__, __dir__ = lazy_attributes(__name__, _NAMES, globals())
