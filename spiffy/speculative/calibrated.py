"""Where calibrated draft graphs live, and how a decode finds the one for its model and setting.

Layout (written by the calibration tooling, read here)::

    calibration/<model>/<setting>/D<budget>.json     # one graph per budget (preferred)
    calibration/<model>/<setting>/graph.json         # a single graph for every budget

``<model>`` is the backend's name (the checkpoint directory's name, e.g. ``spiffy-dllm-ref``) or its
fingerprint (:func:`backend_fingerprint`, 16 hex digits of the model config). ``<setting>`` is
:func:`setting_key`, e.g. ``b32_k1`` (block 32, one token per step), ``b32_k2``, ``b32_s8`` (an
uneven 8-step schedule per block), ``b32_thr0.9`` (threshold decoding). `spiffy calibrate` writes a
set to ``<setting>_g<gen_length>_<cache>`` (e.g. ``b32_k1_g256_dual``); the decoder prefers that
folder, then ``<setting>_<cache>`` (the shipped sets, e.g. ``b32_k1_dual``), then ``<setting>``.
Roots, in order: the user's calibrations (``$SPIFFY_CACHE/calibration``, where `spiffy calibrate` writes
by default), then the repository's ``calibration/``; ``$SPIFFY_CALIBRATION`` (or an explicit root)
replaces both.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

import networkx as nx

from ..backends.fingerprint import config_digest, model_fingerprint
from ..errors import ArtifactError
from ..sampling.schedule import block_schedule
from .graph import load_graph

ARTIFACT = "spiffy.calibration"
ARTIFACT_VERSION = 1


def user_calibration_dir() -> Path:
    """Where `spiffy calibrate` writes by default: ``$SPIFFY_CACHE/calibration`` (``~/.cache/spiffy``)."""
    from ..named_models import cache_root

    return cache_root() / "calibration"


def calibration_root(root=None) -> Path:
    """The shipped calibration root: ``root``, else ``$SPIFFY_CALIBRATION``, else the repository's."""
    if root is not None:
        return Path(root)
    env = os.environ.get("SPIFFY_CALIBRATION")
    if env:
        return Path(env)
    from ..resources import resource_dir

    return resource_dir("calibration")


def calibration_roots(root=None) -> list:
    """Roots searched in order: an explicit ``root`` (or ``$SPIFFY_CALIBRATION``) alone; otherwise the
    user's own calibrations first, then the shipped ones."""
    if root is not None or os.environ.get("SPIFFY_CALIBRATION"):
        return [calibration_root(root)]
    return [user_calibration_dir(), calibration_root()]


def set_folder_name(setting: str, gen_length: int, cache: str, temperature: float = 0.0) -> str:
    """The folder of a calibration set: every setting its graph depends on, e.g. ``b32_k1_g256_dual``
    (greedy) or ``b32_k1_g256_t0.7_dual`` (traced with sampling at T = 0.7)."""
    temp = f"_t{temperature:g}" if temperature else ""
    return f"{setting}_g{gen_length}{temp}_{cache}"


def backend_fingerprint(backend) -> str:
    """The config part of the model fingerprint (16 hex digits): a folder name that survives renames."""
    return config_digest(backend)


def setting_key(cfg, sampler: str) -> str:
    """The part of a decoding configuration a draft graph depends on (block length and how many tokens
    each step commits)."""
    head = f"b{cfg.block_length}"
    if cfg.threshold is not None:
        return f"{head}_thr{cfg.threshold:g}"
    sched = block_schedule(sampler, cfg.block_length, cfg.steps_per_block)
    if len(set(sched)) == 1:
        return f"{head}_k{sched[0]}"
    return f"{head}_{sampler}{cfg.steps_per_block}"


def find_calibrated_graph(model_names: Sequence[str], setting: str, budget: int, cache: Optional[str] = None,
                          root=None, gen_length: Optional[int] = None, temperature: float = 0.0) -> Optional[Path]:
    """The calibrated graph file for a model (any of ``model_names``), setting and budget, or None. A set
    made for this generation length, temperature and cache mode wins over one without those in its name."""
    folders = []
    if gen_length is not None and cache:
        folders.append(set_folder_name(setting, gen_length, cache, temperature))
    folders += ([f"{setting}_{cache}"] if cache else [])
    folders.append(setting)
    for base in calibration_roots(root):
        if not base.is_dir():
            continue
        for name in model_names:
            for folder in folders:
                d = base / name / folder
                for fname in (f"D{budget}.json", "graph.json"):
                    if (d / fname).is_file():
                        return d / fname
    return None


def calibrated_graph_for(backend, cfg, sampler: str, budget: int, root=None) -> Optional[Path]:
    """Lookup hook used by the decoder: the backend's name first, then its fingerprint."""
    return find_calibrated_graph([backend.name, backend_fingerprint(backend)], setting_key(cfg, sampler), budget,
                                 cfg.cache, root, cfg.gen_length, cfg.temperature)


def check_meta(meta: dict, where: str, backend=None, setting: Optional[str] = None, allow_mismatch: bool = False,
               fingerprint: Optional[dict] = None):
    if meta.get("artifact") != ARTIFACT:
        raise ArtifactError(f"{where}: not a calibration artifact (meta.artifact = {meta.get('artifact')!r})")
    if meta.get("artifact_version") != ARTIFACT_VERSION:
        raise ArtifactError(f"{where}: unsupported calibration artifact version {meta.get('artifact_version')!r} "
                            f"(this spiffy reads {ARTIFACT_VERSION})")
    if "acceptance" in meta:
        from .acceptance import AcceptanceModel

        AcceptanceModel.from_meta(meta["acceptance"], where)
    if allow_mismatch:
        return
    if backend is not None or fingerprint is not None:
        want = fingerprint or model_fingerprint(backend)
        have = meta.get("fingerprint") or {}
        if have.get("digest") != want["digest"]:
            diff = [k for k in ("config", "tokenizer", "weights") if have.get(k) != want.get(k)]
            raise ArtifactError(
                f"{where}: calibrated for a different model (fingerprint {have.get('digest')} vs this model's "
                f"{want['digest']}; differing: {', '.join(diff) or 'all'}). Recalibrate with `spiffy calibrate`, or "
                f"pass allow_mismatch / --allow-mismatch to use it anyway")
    if setting is not None and meta.get("setting") not in (None, setting):
        raise ArtifactError(f"{where}: calibrated for setting {meta.get('setting')!r}, not {setting!r}")


def load_graph_artifact(path, backend=None, setting: Optional[str] = None, allow_mismatch: bool = False,
                        fingerprint: Optional[dict] = None) -> nx.DiGraph:
    """Load and validate a calibrated graph (schema, invariants, model fingerprint, setting)."""
    g = load_graph(path)
    check_meta(g.graph.get("meta") or {}, str(path), backend, setting, allow_mismatch, fingerprint)
    return g
