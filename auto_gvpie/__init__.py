"""Auto-GVPIE: an autonomous development worker driven by a local LLM."""

__version__ = "0.1.0"
