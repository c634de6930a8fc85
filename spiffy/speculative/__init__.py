"""Spiffy: lossless speculative decoding of diffusion LMs with self-drafted states in a directed draft graph.

Modules: ``graph`` (formulas, the draft graph, its JSON schema), ``defaults`` (graphs without
calibration), ``calibrated`` (finding calibrated graphs), ``proposer`` (drafts from a distribution,
runtime pruning), ``verifier`` (batch / packed verification forwards), ``walk`` (per-round plan and
acceptance walk), ``stats``, ``decoder`` (the decode loop), ``replay`` (baseline traces, predicted NFE).
"""
from .config import NearLosslessWarning, SpeculativeConfig
from .decoder import generate_speculative
from .defaults import DEFAULT_BUDGETS, default_graph
from .graph import ROOT, formula, graph_from_dict, graph_to_dict, load_graph, make_graph, save_graph, validate_graph
from .proposer import DraftSource, Pruner, geometric_mean_score
from .stats import SpeculativeStats

__all__ = ["SpeculativeConfig", "generate_speculative", "SpeculativeStats", "NearLosslessWarning", "default_graph",
           "DEFAULT_BUDGETS", "make_graph", "load_graph", "save_graph", "validate_graph", "graph_to_dict",
           "graph_from_dict", "formula", "ROOT", "DraftSource", "Pruner", "geometric_mean_score"]
