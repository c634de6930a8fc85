"""Calibration artifacts: ``calibration/<model>/<setting>/D<k>.json`` plus ``counts.json``.

Each ``D<k>.json`` is a draft graph in the schema of :mod:`spiffy.speculative.graph` whose ``meta``
carries the calibration record::

    meta = {"artifact": "spiffy.calibration", "artifact_version": 1,
            "model": name, "fingerprint": {"config", "tokenizer", "weights", "digest"},
            "setting": "b32_k1_dual", "sampler": {...decoding settings...},
            "prompt_set": {"name", "size", "file", "sha"}, "objective", "search", "budget",
            "calibration": {"baseline_calls", "calls", "nfe_reduction"},     # on the calibration traces
            "heldout": {...}}                                             # filled by evaluation, optional

Nodes carry their ``count``. Loading checks the schema, the graph invariants, and the fingerprint
against the model in use (``allow_mismatch=True`` is the override for experiments). Every write is
atomic (``spiffy.atomic``): an interrupted calibration leaves the previous file intact.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import networkx as nx

from ..atomic import atomic_write_json
from ..errors import ArtifactError
from ..speculative.graph import graph_to_dict, load_graph
from .fingerprint import model_fingerprint

ARTIFACT = "spiffy.calibration"
ARTIFACT_VERSION = 1


def write_graph_artifact(graph: nx.DiGraph, path, meta: dict) -> Path:
    d = graph_to_dict(graph)
    d["meta"] = {"artifact": ARTIFACT, "artifact_version": ARTIFACT_VERSION, **meta}
    return atomic_write_json(path, d)


def check_meta(meta: dict, where: str, backend=None, setting: Optional[str] = None, allow_mismatch: bool = False,
               fingerprint: Optional[dict] = None):
    if meta.get("artifact") != ARTIFACT:
        raise ArtifactError(f"{where}: not a calibration artifact (meta.artifact = {meta.get('artifact')!r})")
    if meta.get("artifact_version") != ARTIFACT_VERSION:
        raise ArtifactError(f"{where}: unsupported calibration artifact version {meta.get('artifact_version')!r} "
                            f"(this spiffy reads {ARTIFACT_VERSION})")
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


def read_json(path) -> dict:
    p = Path(path)
    try:
        return json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{p}: not readable JSON ({e})") from None
