"""The LLM seam: the protocol every model client implements, its answer and its errors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

from ..config import ConfigError


class LLMError(Exception):
    """Base of every error an LLM client raises."""


class LLMUnreachable(LLMError):
    """The model cannot be used at all (no server, wrong URL, nothing loaded).

    The engine stops and leaves tasks pending (exit 3): no attempt is charged for it.
    """

    def __init__(self, url: str, message: str | None = None, *, detail: str = "") -> None:
        self.url = url
        self.detail = detail
        super().__init__(message or f"no LLM server at {url} — start LM Studio, or pass --llm-url")


class LLMUnavailable(LLMUnreachable):
    """The server is there but answered every try with an error of its own (5xx, 429).

    As unusable as no server at all, so it stops the queue the same way (exit 3, tasks
    stay pending) instead of failing every task in turn. `status` is the last HTTP status.
    """

    def __init__(self, url: str, message: str, *, status: int, detail: str = "") -> None:
        self.status = status
        super().__init__(url, message, detail=detail)


class LLMConfigError(LLMError, ConfigError):
    """The client cannot work as configured (a malformed --llm-url): a usage error, exit 2.

    Also a ConfigError, since it is a setting that cannot be used, whoever catches it.
    """


class BadAnswer(LLMError):
    """The model answered, but not with something usable; counts as a failed attempt.

    `reason` is one of: "empty", "truncated" (finish_reason "length"), "http_error"
    (4xx, or an error the server reported inside an answer), "context_overflow" (the
    server said the prompt is too long, whatever the status), "malformed" (a body that is not the wire format), "timeout" (no
    answer within the timeout), "stalled" (a stream went quiet), "disconnected" (the
    stream broke off); the last three only while the server still answers other
    requests, since a server that answers nothing any more is LLMUnreachable. `partial_text` keeps what did arrive, so it can be fed back.
    """

    def __init__(self, reason: str, message: str, *, partial_text: str = "", status: int | None = None) -> None:
        self.reason = reason
        self.partial_text = partial_text
        self.status = status
        super().__init__(message)


SAMPLE_TEMPERATURE = 0.7  # for samples after the first: different enough to be worth testing, still on topic


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str | None
    model: str
    prompt_tokens: int | None
    completion_tokens: int | None
    seconds: float
    first_token_seconds: float | None  # None when the answer was not streamed


class LLM(Protocol):
    model: str
    context_window: int  # tokens the model sees at once: prompt and answer together

    def complete(
        self,
        messages: list[dict],
        *,
        json_schema: dict | None = None,
        max_tokens: int | None = None,
        on_token: Callable[[str], None] | None = None,
        sample: int = 0,
    ) -> Completion:
        """Answer a chat; `on_token` is called with each piece of text as it arrives.

        With `json_schema` the client asks for structured output where the backend
        supports it; callers must still validate the text, since servers can fail open.
        `sample` numbers independent answers to the same prompt: 0 is the client's usual
        answer; from 1 on, another seed and some temperature, so each sample can differ.
        """
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens `text` takes in the prompt; an estimate that errs on the high side where not exact."""
        ...
