"""AR-verifier mode: a diffusion LM drafts for an autoregressive target whose output never changes
(SpecDiff / DiffuSpec / D²SD), plus the classic AR-drafter baseline. See the README section "AR-verifier mode"."""
from .adaptive import AdaptiveLength
from .ar_drafter import ARDrafter
from .decode import ARDecodeConfig, generate_ar, hf_generate
from .drafter import DLLMDrafter, Draft
from .lookup import PromptLookupDrafter
from .ngram import NGramModel, build_ngram
from .path_search import PathSearchConfig, causal_path_search
from .result import ARResult
from .target import ARTarget, TargetState, load_causal_lm
from .tree import DraftTree, ancestor_mask, branch_points, rejection_scores
from .vocab import check_tokenizers
from .pair import load_pair, make_drafter

__all__ = ["ARTarget", "TargetState", "load_causal_lm", "DLLMDrafter", "ARDrafter", "PromptLookupDrafter", "Draft", "ARDecodeConfig",
           "generate_ar", "hf_generate", "ARResult", "NGramModel", "build_ngram", "PathSearchConfig",
           "causal_path_search", "AdaptiveLength", "DraftTree", "ancestor_mask", "branch_points",
           "rejection_scores", "check_tokenizers", "load_pair", "make_drafter"]
