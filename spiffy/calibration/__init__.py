"""Offline calibration of Spiffy's draft graphs from baseline decoding traces."""
from .artifact import load_graph_artifact, write_graph_artifact
from ..backends.fingerprint import model_fingerprint
from .pipeline import CalibrationConfig, CalibrationRun, calibrate
from .pruning import ChildAwareScore, calibrated_pruner
from .select import OBJECTIVES, select_nodes
from .simulate import simulate

__all__ = ["calibrate", "CalibrationConfig", "CalibrationRun", "select_nodes", "simulate", "OBJECTIVES", "load_graph_artifact", "write_graph_artifact",
           "model_fingerprint", "calibrated_pruner", "ChildAwareScore"]
