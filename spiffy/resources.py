"""Where the bundled files are: reference checkpoints and tokenizer (``models/``) and calibrated draft
graphs (``calibration/``).

In a checkout (or an editable install) they are the repository's own folders, beside the package. A
wheel carries a copy inside the package, ``spiffy/_bundled/<name>`` (written at build time by setup.py's
build step), because nothing outside the package exists once it is installed. The checkout wins when both
exist, so an editable install never reads a stale copy.
"""
from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
CHECKOUT = PACKAGE.parent
BUNDLED = PACKAGE / "_bundled"
NAMES = ("models", "calibration")


def is_checkout() -> bool:
    return (CHECKOUT / "pyproject.toml").exists() and (CHECKOUT / "models").is_dir()


def resource_dir(name: str) -> Path:
    """The folder of the bundled ``name`` ("models" or "calibration"). When neither copy exists the
    checkout's path is returned, so that errors name where the files were expected."""
    if name not in NAMES:
        raise ValueError(f"unknown resource {name!r}: {NAMES}")
    if is_checkout():
        return CHECKOUT / name
    if (BUNDLED / name).is_dir():
        return BUNDLED / name
    return CHECKOUT / name
