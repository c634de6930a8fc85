"""The reference models' special tokens and chat format (no dependencies, so every training module can use it)."""
from __future__ import annotations

PAD = "<|pad|>"
EOS = "<|endoftext|>"
BOS = "<|startoftext|>"
MASK = "<|mdm_mask|>"
EOT = "<|eot|>"
USER = "<|user|>"
ASSISTANT = "<|assistant|>"
SPECIAL_TOKENS = [PAD, EOS, BOS, MASK, EOT, USER, ASSISTANT]

# user turn: "<|user|>\n{text}<|eot|>\n"; generation prompt: "<|assistant|>\n"; an assistant turn
# ends with EOS (SFT pads the answer side with further EOS tokens).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}" + USER + "\n{{ message['content'] }}" + EOT + "\n"
    "{% elif message['role'] == 'assistant' %}" + ASSISTANT + "\n{{ message['content'] }}" + EOS +
    "{% else %}{{ message['content'] }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}" + ASSISTANT + "\n{% endif %}"
)


def format_prompt(text: str) -> str:
    """The chat-formatted prompt as a string (identical to the template's rendering)."""
    return f"{USER}\n{text}{EOT}\n{ASSISTANT}\n"
