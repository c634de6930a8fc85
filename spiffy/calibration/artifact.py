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

from pathlib import Path

import networkx as nx

from ..atomic import atomic_write_json
from ..speculative.calibrated import ARTIFACT, ARTIFACT_VERSION, check_meta, load_graph_artifact  # noqa: F401
from ..speculative.graph import graph_to_dict


def write_graph_artifact(graph: nx.DiGraph, path, meta: dict) -> Path:
    d = graph_to_dict(graph)
    d["meta"] = {"artifact": ARTIFACT, "artifact_version": ARTIFACT_VERSION, **meta}
    return atomic_write_json(path, d)
