"""AR-verifier mode: a diffusion LM (or prompt lookup, or a small AR model) drafts for an autoregressive
target whose output never changes (SpecDiff / DiffuSpec / D²SD, classic speculative decoding). See the
README section "AR-verifier mode". Public names are imported on first use."""
from .._lazy import lazy_attributes

_NAMES = {
    "AdaptiveLength": ".adaptive", "ARDrafter": ".ar_drafter", "ARDecodeConfig": ".decode", "generate_ar": ".decode",
    "hf_generate": ".decode", "DLLMDrafter": ".drafter", "Draft": ".drafter", "PromptLookupDrafter": ".lookup",
    "DraftGate": ".gate", "NGramModel": ".ngram", "build_ngram": ".ngram", "PathSearchConfig": ".path_search",
    "causal_path_search": ".path_search", "ARResult": ".result", "ARTarget": ".target", "TargetState": ".target",
    "load_causal_lm": ".target", "DraftTree": ".tree", "branch_alternatives": ".tree",
    "rejection_scores": ".tree", "check_tokenizers": ".vocab", "load_pair": ".pair", "make_drafter": ".pair",
}
__all__ = list(_NAMES)
__getattr__, __dir__ = lazy_attributes(__name__, _NAMES, globals())
