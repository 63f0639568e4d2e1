"""Model clients: any OpenAI-compatible server over HTTP, or the bundled embedded model."""

from __future__ import annotations

from .base import LLM, BadAnswer, Completion, LLMConfigError, LLMError, LLMUnavailable, LLMUnreachable
from .http import HttpLLM

__all__ = [
    "LLM",
    "BadAnswer",
    "Completion",
    "HttpLLM",
    "LLMConfigError",
    "LLMError",
    "LLMUnavailable",
    "LLMUnreachable",
    "open_llm",
]


def open_llm(settings, progress=None) -> LLM:
    """The client `settings.llm` names. Touches no server: the first use of the client does."""
    if settings.llm == "embedded":
        # llama-cpp-python is an optional extra; importing it only when asked keeps the
        # HTTP path free of it.
        from .embedded import EmbeddedLLM

        return EmbeddedLLM.from_settings(settings, progress=progress)
    if settings.llm == "http":
        return HttpLLM.from_settings(settings)
    raise ValueError(f"llm: unknown backend {settings.llm!r} (expected http or embedded)")
