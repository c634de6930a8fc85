"""From a request's final tokens to the text it is sent: stop tokens, stop strings, ``max_tokens``,
and the streamed deltas (text is held back while it could still be the start of a stop string or an
incomplete character)."""
from __future__ import annotations

from typing import Optional


class TextAssembler:
    def __init__(self, engine, max_tokens: int, stops: list):
        self.engine, self.max_tokens, self.stops = engine, max_tokens, list(stops)
        self.stop_ids = engine.stop_ids()
        self.tokens: list = []
        self.text = ""          # the answer so far (the whole answer once finished)
        self.sent = ""          # what has been streamed
        self.finished = False
        self.finish_reason: Optional[str] = None
        self._stopped = False   # a stop token or stop string ended the answer

    @property
    def completion_tokens(self) -> int:
        return len(self.tokens)

    def _update(self, new: list):
        if self._stopped:
            return
        for t in new:
            if len(self.tokens) >= self.max_tokens:
                break
            self.tokens.append(int(t))
            if int(t) in self.stop_ids:
                self._stopped = True
                break
        text = self.engine.decode_text(self.tokens)
        cut = min((i for i in (text.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            text = text[:cut]
            self._stopped = True
        self.text = text

    def _delta(self, final: bool) -> str:
        ready = self.text
        if not final:
            hold = max((len(s) - 1 for s in self.stops), default=0)
            ready = ready[:len(ready) - hold] if hold else ready
            ready = ready.rstrip("\ufffd")
        if not ready.startswith(self.sent) or len(ready) <= len(self.sent):
            return ""
        d = ready[len(self.sent):]
        self.sent = ready
        return d

    def feed(self, new: list) -> str:
        """Tokens that just became final; returns the text that can be sent now."""
        self._update(new)
        return self._delta(final=False)

    def finish(self, token_ids: list) -> str:
        """The decode's whole output (what was not fed yet is taken from it); returns the rest of the text."""
        self._update(token_ids[len(self.tokens):] if not self._stopped else [])
        self.finished = True
        self.finish_reason = "stop" if self._stopped or len(self.tokens) < self.max_tokens else "length"
        if self.sent and not self.text.startswith(self.sent):   # a later token changed earlier text: send the rest
            return ""
        return self._delta(final=True)
