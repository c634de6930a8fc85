"""Spiffy: lossless speculative decoding of diffusion LMs with self-drafted states in a directed draft graph.

Modules: ``graph`` (formulas, the draft graph, its JSON schema), ``defaults`` (graphs without
calibration), ``calibrated`` (finding calibrated graphs), ``proposer`` (drafts from a distribution,
runtime pruning), ``verifier`` (batch / packed verification forwards), ``walk`` (per-round plan and
acceptance walk), ``stats``, ``decoder`` (the decode loop), ``replay`` (baseline traces, predicted NFE).
"""
import importlib

# names -> the module that defines them; imported on first use, so that the CLI can read SpeculativeConfig's
# fields (its options) without importing torch
_EXPORTS = {
    "SpeculativeConfig": "config", "NearLosslessWarning": "config", "generate_speculative": "decoder",
    "DEFAULT_BUDGETS": "defaults", "default_graph": "defaults", "ROOT": "graph", "formula": "graph",
    "graph_from_dict": "graph", "graph_to_dict": "graph", "load_graph": "graph", "make_graph": "graph",
    "save_graph": "graph", "validate_graph": "graph", "DraftSource": "proposer", "Pruner": "proposer",
    "geometric_mean_score": "proposer", "SpeculativeStats": "stats"}
__all__ = list(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value
