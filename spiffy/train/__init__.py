"""Training recipe for the bundled reference models (tokenizer, dLLM, AR target and drafter).

Modules: ``tokenizer`` (byte-level BPE + chat template), ``data`` (corpora, packing, SFT rows),
``objectives`` (masked-diffusion and causal-LM losses), ``models`` (model construction from a recipe),
``loop`` (seeded training loop with logging and checkpointing), ``evaluate`` (held-out losses, samples,
GSM8K accuracy), ``speculatability`` (draft-chain replay) and ``cards`` (model cards from measured JSON).
"""
