"""Model adapters: one module per model family, a shared forward core and a loader."""
from .backend import DiffusionBackend
from .core import ContextKV
from .loader import default_model_path, load_backend
from .tiny import tiny_backend

__all__ = ["DiffusionBackend", "ContextKV", "load_backend", "tiny_backend", "default_model_path"]
