"""Training for the bundled reference models (tokenizer, dLLM, AR target and drafter) and for adapters that
turn a causal LM into a diffusion LM. A package of its own beside ``spiffy``: the runtime never imports it;
`spiffy train` does.

Modules: ``chat_format`` (special tokens, chat template), ``tokenizer`` (byte-level BPE), ``data`` (corpora,
packing, SFT rows), ``objectives`` (masked-diffusion and causal-LM losses), ``models`` (model construction
from a recipe), ``loop`` (seeded training loop with logging and checkpointing), ``evaluate`` (held-out
losses, samples, GSM8K accuracy), ``speculatability`` (draft-chain replay), ``cards`` (model cards from
measured JSON); ``adapt``, ``lora``, ``chat_data`` and ``adapter_card`` (LoRA adaptation of a causal LM into
a diffusion LM).
"""
