"""Exceptions raised for bad input. Each carries a message meant for the user."""


class SpiffyError(ValueError):
    """Base class for every user-facing error raised by spiffy."""


class ModelLoadError(SpiffyError):
    """A model path or hub id could not be resolved or its checkpoint is unusable."""


class ConfigError(SpiffyError):
    """An impossible or inconsistent decoding configuration."""


class ArtifactError(SpiffyError):
    """A calibration artifact is corrupt, truncated or does not match the model."""
