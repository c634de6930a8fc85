"""Spiffy: lossless speculative decoding for diffusion language models."""
from .backends import DiffusionBackend, load_backend, tiny_backend
from .errors import ArtifactError, ConfigError, ModelLoadError, SpiffyError
from .generate import generate
from .result import GenerationResult
from .sampling.config import GenerationConfig

__version__ = "0.1.0"

__all__ = ["generate", "GenerationConfig", "GenerationResult", "load_backend", "tiny_backend", "DiffusionBackend",
           "SpiffyError", "ConfigError", "ModelLoadError", "ArtifactError"]
