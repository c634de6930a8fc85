"""The OpenAI-compatible request bodies (pydantic), the error object and the chunk shapes.

Unknown fields are refused (422), except the OpenAI fields listed here that have one meaning we can
honour. Project-specific settings go in ``spiffy: {...}`` (:class:`SpiffyOptions`)."""
from __future__ import annotations

import time
import uuid
from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field


class ApiError(Exception):
    """A request the server refuses: ``status`` and an OpenAI-style error object."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: Optional[str] = None,
                 code: Optional[str] = None, headers: Optional[dict] = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type: str = "invalid_request_error", param=None, code=None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


class SpiffyOptions(BaseModel):
    """Per-request decoding settings beyond OpenAI's; each falls back to the server's default and is
    checked against its limits."""
    model_config = ConfigDict(extra="forbid")
    # dLLM
    budget: Optional[int] = Field(None, ge=0, description="Spiffy draft budget D (0: the plain baseline)")
    cache: Optional[Literal["none", "prefix", "dual"]] = None
    threshold: Optional[float] = Field(None, gt=0, le=1, description="confidence-threshold parallel decoding")
    tokens_per_step: Optional[int] = Field(None, ge=1)
    block_length: Optional[int] = Field(None, ge=1)
    verify: Optional[Literal["batch", "packed"]] = None
    # AR target
    strategy: Optional[Literal["plain", "chain", "tree", "adaptive", "path"]] = None
    draft_length: Optional[int] = Field(None, ge=1)
    # both
    raw: Optional[bool] = Field(None, description="completions: do not apply the chat template")


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant"]
    content: Union[str, list[ContentPart]]
    name: Optional[str] = None

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class _Common(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: Optional[str] = None
    max_tokens: Optional[int] = Field(None, ge=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1)
    temperature: Optional[float] = Field(None, ge=0)
    top_p: Optional[float] = Field(None, gt=0, le=1)
    seed: Optional[int] = Field(None, ge=0)
    stop: Optional[Union[str, list[str]]] = None
    stream: bool = False
    stream_options: Optional[dict] = None
    n: int = Field(1, ge=1, le=1, description="one choice per request")
    user: Optional[str] = None
    spiffy: SpiffyOptions = Field(default_factory=SpiffyOptions)

    def stops(self) -> list:
        s = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return [x for x in s if x]

    def wanted_tokens(self) -> Optional[int]:
        return self.max_completion_tokens or self.max_tokens


class ChatRequest(_Common):
    messages: list[ChatMessage] = Field(min_length=1)


class CompletionRequest(_Common):
    prompt: Union[str, list[int]]
    echo: Literal[False] = Field(False, description="not supported (must be false)")


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())
