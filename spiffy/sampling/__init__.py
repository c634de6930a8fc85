"""Baseline samplers: configuration, keyed noise, commit schedules, the step rule, the decode loop."""
from .config import GenerationConfig
from .baseline import generate_baseline
from .session import DecodeSession
from .step import denoise_step

__all__ = ["GenerationConfig", "generate_baseline", "DecodeSession", "denoise_step"]
