"""Client for any OpenAI-compatible chat server: LM Studio, llama.cpp, Ollama, vLLM."""

from __future__ import annotations

import email.utils
import json
import logging
import math
import random
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import urlsplit, urlunsplit

import requests
import urllib3

from .base import SAMPLE_TEMPERATURE, BadAnswer, Completion, LLMConfigError, LLMUnavailable, LLMUnreachable

log = logging.getLogger(__name__)

DEFAULT_URL = "http://127.0.0.1:1234/v1"  # LM Studio's
CHARS_PER_TOKEN = 3.5  # below the ~4 of English prose, so estimates err on the high side for code
# Ollama runs models with a small context unless num_ctx is set, whatever the model could take.
OLLAMA_DEFAULT_CONTEXT = 2048
_STRUCTURED_WORDS = ("response_format", "schema", "grammar")
# What requests and urllib3 raise, some only on the first request, for a URL they cannot use.
_MALFORMED_URL = (
    requests.exceptions.InvalidURL,
    requests.exceptions.InvalidSchema,
    requests.exceptions.MissingSchema,
    urllib3.exceptions.LocationValueError,
)


def _next_spelling(refused: str, flavour: str) -> str | None:
    """The structured-output spelling to try after `refused`: OpenAI's json_schema, then
    llama-cpp-python's json_object with a schema, then llama.cpp's top-level json_schema, then none."""
    order = ["response_format", "json_object", "json_schema"] if flavour == "llamacpp" else \
        ["response_format", "json_object"]
    index = order.index(refused) + 1 if refused in order else len(order)
    return order[index] if index < len(order) else None
_OVERFLOW_WORDS = ("context length", "context window", "context size", "n_ctx", "too many tokens", "maximum context")
# Reasoning models served without a reasoning parser put their thinking in the content.
_THINKING = re.compile(r"\A\s*<think>.*?</think>\s*", re.S)


@dataclass
class _Answer:
    text: str = ""
    finish_reason: str | None = None
    model: str | None = None
    usage: dict = field(default_factory=dict)
    first_token_seconds: float | None = None
    pieces: int = 0


class HttpLLM:
    """A chat model behind an OpenAI-compatible HTTP API.

    Nothing is asked of the server until first use: then the model is picked (when not
    given) from GET /models and the context window is asked where the server tells
    (LM Studio's /api/v0/models, llama.cpp's /props, Ollama's /api/show).

    `timeout` bounds the wait for an answer to begin (prompt processing included);
    `stall_timeout` bounds each silence once tokens are streaming. Connection errors,
    429 and 5xx are retried `retries` times with exponential backoff and jitter
    (429/503 honour Retry-After); when every try fails the server is unusable
    (LLMUnreachable, or LLMUnavailable when it answered with errors), not the request.
    A malformed `url` raises LLMConfigError here, before any request.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        model: str | None = None,
        *,
        context_window: int = 8192,
        timeout: float = 180.0,
        stall_timeout: float = 60.0,
        connect_timeout: float = 5.0,
        retries: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 20.0,
        max_retry_after: float = 120.0,
        stream: bool = True,
    ) -> None:
        self.url, self._root = _split_url(url)
        self._model = model
        self._default_context = context_window
        self._context: int | None = None
        self.timeout = timeout
        self.stall_timeout = min(stall_timeout, timeout)
        self.connect_timeout = connect_timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_retry_after = max_retry_after
        self.stream = stream
        self.flavour: str | None = None  # "lmstudio" | "llamacpp" | "ollama" | "openai", once discovered
        # How this server takes a JSON schema; downgraded when the server refuses one.
        self._structured: str | None = "response_format"
        self._session = requests.Session()
        if urlsplit(self.url).hostname in ("127.0.0.1", "localhost", "::1"):
            self._session.trust_env = False  # an HTTP(S)_PROXY meant for the internet must not swallow loopback calls
        self._discovery = threading.Lock()  # workers may share one client

    @classmethod
    def from_settings(cls, settings) -> HttpLLM:
        return cls(
            settings.llm_url,
            settings.model,
            context_window=settings.context_window,
            timeout=settings.llm_timeout,
            retries=settings.llm_retries,
        )

    @property
    def model(self) -> str:
        self._discover()
        assert self._model is not None
        return self._model

    @property
    def context_window(self) -> int:
        self._discover()
        assert self._context is not None
        return self._context

    def close(self) -> None:
        self._session.close()

    def count_tokens(self, text: str) -> int:
        return math.ceil(len(text.encode("utf-8")) / CHARS_PER_TOKEN)

    def complete(
        self,
        messages: list[dict],
        *,
        json_schema: dict | None = None,
        max_tokens: int | None = None,
        on_token: Callable[[str], None] | None = None,
        sample: int = 0,
    ) -> Completion:
        self._discover()
        body: dict = {"model": self._model, "messages": messages, "stream": self.stream}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if sample:  # the first answer keeps the server's own sampling settings
            body.update(seed=sample, temperature=SAMPLE_TEMPERATURE)
        started = time.monotonic()
        try:
            resp = self._post_chat(body, json_schema)
            try:
                if "text/event-stream" in resp.headers.get("Content-Type", ""):
                    answer = self._read_stream(resp, on_token, started)
                else:
                    answer = self._read_json(resp)
            finally:
                resp.close()
        except BadAnswer as exc:
            if exc.reason in ("timeout", "stalled", "disconnected"):
                self._check_alive(exc)
            raise
        seconds = time.monotonic() - started
        if answer.first_token_seconds is None and on_token is not None and answer.text:
            on_token(answer.text)  # the server ignored stream=true: all of it arrived at once
        text = _THINKING.sub("", answer.text, count=1)
        usage = answer.usage
        completion = Completion(
            text=text,
            finish_reason=answer.finish_reason,
            model=answer.model or self.model,
            prompt_tokens=_positive_int(usage.get("prompt_tokens")),
            completion_tokens=_positive_int(usage.get("completion_tokens")),
            seconds=seconds,
            first_token_seconds=answer.first_token_seconds,
        )
        _log_call(completion, answer.pieces)
        if completion.finish_reason == "length":
            raise BadAnswer(
                "truncated",
                f"the answer was cut off at the token limit after {len(text)} characters",
                partial_text=text,
            )
        if not text.strip():
            raise BadAnswer("empty", "the model gave an empty answer")
        return completion

    # -- discovery ---------------------------------------------------------------

    def _discover(self) -> None:
        with self._discovery:
            if self._context is None:
                self._discover_now()

    def _discover_now(self) -> None:
        listed = self._list_models()
        described = self._lmstudio_models()
        if self._model is None:
            self._model = self._pick_model(described if described is not None else listed)
        elif self._model not in {m["id"] for m in listed}:
            log.warning("model %r is not among those %s lists; asking for it anyway", self._model, self.url)
        told, self.flavour = self._ask_context(described)
        self._context = told or self._default_context
        log.info(
            "LLM %s at %s (%s), context window %d tokens%s",
            self._model,
            self.url,
            self.flavour,
            self._context,
            "" if told else " (configured default; the server does not say)",
        )

    def _list_models(self) -> list[dict]:
        read_timeout = min(self.timeout, 30.0)
        try:
            resp = self._send("GET", self.url + "/models", read_timeout=read_timeout)
        except BadAnswer as exc:  # a timeout: something took the connection and said nothing
            raise LLMUnreachable(self.url, _silent(self.url, read_timeout), detail=str(exc)) from exc
        with resp:
            status, data = resp.status_code, _json_or_none(resp)
        entries = data.get("data") if isinstance(data, dict) else None
        if status in (401, 403):
            raise LLMUnreachable(
                self.url,
                f"the LLM server at {self.url} refused access ({status}) — "
                "turn off its API-key authentication, or pass another --llm-url",
            )
        if status != 200 or not isinstance(entries, list):
            # Something answers there, but not as an OpenAI-compatible server: most often a wrong path or port.
            detail = f"GET {self.url}/models answered {status} without a model list"
            raise LLMUnreachable(
                self.url,
                f"no LLM server API at {self.url} ({detail}) — check --llm-url (LM Studio's is {DEFAULT_URL})",
                detail=detail,
            )
        return [e for e in entries if isinstance(e, dict) and isinstance(e.get("id"), str)]

    def _lmstudio_models(self) -> list[dict] | None:
        """LM Studio's description of its models (type, loaded or not, context), in its v0 API's shape."""
        data = self._probe("GET", self._root + "/api/v0/models")
        entries = data.get("data") if data else None
        if isinstance(entries, list) and all(isinstance(e, dict) and "type" in e for e in entries):
            return [e for e in entries if isinstance(e.get("id"), str)]
        data = self._probe("GET", self._root + "/api/v1/models")  # LM Studio 0.4 onwards
        entries = data.get("models") if data else None
        if isinstance(entries, list) and all(isinstance(e, dict) and "type" in e for e in entries):
            return [_from_lmstudio_v1(e) for e in entries if isinstance(e.get("key"), str)]
        return None

    def _pick_model(self, entries: list[dict]) -> str:
        """The first loaded chat model, else the first chat model the server offers."""
        chat = [e for e in entries if not _is_embedding(e)]
        if not chat:
            offered = ", ".join(e["id"] for e in entries) or "none"
            raise LLMUnreachable(
                self.url,
                f"the LLM server at {self.url} offers no chat model (models: {offered}) — "
                "load one in LM Studio, or pass --model",
            )
        loaded = [e for e in chat if e.get("state", "loaded") == "loaded"]
        return (loaded or chat)[0]["id"]

    def _ask_context(self, described: list[dict] | None) -> tuple[int | None, str]:
        if described is not None:
            entry = next((e for e in described if e["id"] == self._model), {})
            loaded = _positive_int(entry.get("loaded_context_length"))
            if loaded:
                return loaded, "lmstudio"
            # Not loaded yet: LM Studio will load it with its own default, at most the maximum.
            largest = _positive_int(entry.get("max_context_length"))
            return (min(largest, self._default_context) if largest else None), "lmstudio"
        props = self._probe("GET", self._root + "/props")
        if props is not None:
            settings = props.get("default_generation_settings")
            n_ctx = settings.get("n_ctx") if isinstance(settings, dict) else props.get("n_ctx")
            return _positive_int(n_ctx), "llamacpp"
        shown = self._probe("POST", self._root + "/api/show", {"model": self._model})
        if shown is not None:
            found = re.search(r"^num_ctx\s+(\d+)", str(shown.get("parameters", "")), re.M)
            if found:
                return int(found.group(1)), "ollama"
            log.warning("Ollama runs %s with a small context; set num_ctx in its Modelfile for more", self._model)
            return min(OLLAMA_DEFAULT_CONTEXT, self._default_context), "ollama"
        return None, "openai"

    def _probe(self, method: str, url: str, body: dict | None = None) -> dict | None:
        """A server-specific endpoint's JSON object, or None when this server has no such endpoint."""
        try:
            with self._session.request(method, url, json=body, timeout=(self.connect_timeout, 10.0)) as resp:
                data = _json_or_none(resp) if resp.status_code == 200 else None
        except requests.RequestException as exc:
            log.debug("%s %s: %s", method, url, exc)
            return None
        return data if isinstance(data, dict) else None

    # -- requests ------------------------------------------------------------------

    def _send(self, method: str, url: str, *, body: dict | None = None, read_timeout: float) -> requests.Response:
        """The server's response, retrying connection errors, 429 and 5xx.

        The body is left unread (streamed) so that a chat answer can be read as it arrives.
        When every try fails the server, not this request, is at fault: LLMUnreachable, or
        LLMUnavailable when it answered. A 5xx that blames the request is returned, not retried.
        """
        tries = self.retries + 1
        wait = 0.0
        failure, connected, status, excerpt = "", False, None, ""
        statuses: list[int] = []
        for attempt in range(tries):
            if attempt:
                log.warning("%s %s: %s; retry %d/%d in %.1f s", method, url, failure, attempt, self.retries, wait)
                time.sleep(wait)
            try:
                resp = self._session.request(
                    method, url, json=body, timeout=(self.connect_timeout, read_timeout), stream=True
                )
            except requests.ReadTimeout:
                # Not retried: a generation that takes this long would take as long again.
                raise BadAnswer(
                    "timeout",
                    f"the LLM server at {self.url} accepted the request but did not answer within {read_timeout:g} s",
                ) from None
            except requests.ConnectionError as exc:  # ConnectTimeout included
                (connected, failure), status = _connection_failure(exc, self.connect_timeout), None
            except _MALFORMED_URL as exc:  # whatever _split_url let through
                raise LLMConfigError(f"--llm-url {self.url}: {exc}") from None
            else:
                if resp.status_code != 429 and resp.status_code < 500:
                    return resp
                text = _error_text(resp)
                lowered = text.lower()
                if body and "response_format" in body and any(w in lowered for w in _STRUCTURED_WORDS):
                    return resp  # a refused spelling, not a server fault: the caller falls back
                if any(w in lowered for w in _OVERFLOW_WORDS):
                    return resp  # the prompt is too long (some servers say so with a 500): the caller tells
                status, failure, excerpt = resp.status_code, f"{resp.status_code} {text}", _excerpt(text)
                statuses.append(status)
                retry_after = self._retry_after(resp)
                resp.close()
                if retry_after is not None:
                    wait = retry_after
                    continue
            ceiling = min(self.max_backoff, self.backoff * 2**attempt)
            wait = ceiling / 2 + random.uniform(0, ceiling / 2)
        if status is not None:
            codes = "/".join(str(code) for code in dict.fromkeys(statuses))
            which = "its only try" if tries == 1 else \
                f"all {tries} tries" if len(statuses) == tries else f"{len(statuses)} of {tries} tries"
            raise LLMUnavailable(
                self.url,
                f"the LLM server at {self.url} answered HTTP {codes} to {which}: {excerpt or 'no explanation'}",
                status=status,
                detail=failure,
            )
        raise self._no_server(connected, f"{failure}, {_tries(tries)}")

    def _no_server(self, connected: bool, failure: str) -> LLMUnreachable:
        if connected:
            return LLMUnreachable(
                self.url,
                f"something at {self.url} accepted the connection but closed it without an answer ({failure})",
                detail=failure,
            )
        return LLMUnreachable(
            self.url, f"no LLM server at {self.url} ({failure}) — start LM Studio, or pass --llm-url", detail=failure
        )

    def _check_alive(self, failure: BadAnswer) -> None:
        """Raise LLMUnreachable when, after `failure`, the server answers nothing at all any more.

        A timeout or a broken stream is charged to the attempt only while the server still
        answers: one that hung or crashed would otherwise fail every task in the queue in turn.
        """
        wait = min(self.timeout, 30.0)
        try:
            self._session.get(self.url + "/models", timeout=(self.connect_timeout, wait)).close()
        except requests.ReadTimeout:
            raise LLMUnreachable(
                self.url, f"{_silent(self.url, wait)}; before that, {failure}", detail=str(failure)
            ) from None
        except requests.ConnectionError as exc:
            connected, what = _connection_failure(exc, self.connect_timeout)
            raise self._no_server(connected, f"{what}, after: {failure}") from None

    def _retry_after(self, resp: requests.Response) -> float | None:
        value = resp.headers.get("Retry-After", "").strip()
        if not value:
            return None
        try:
            seconds = float(value)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                return None
            seconds = when.timestamp() - time.time()
        if math.isnan(seconds):
            return None
        return min(max(seconds, 0.0), self.max_retry_after)

    def _post_chat(self, body: dict, json_schema: dict | None) -> requests.Response:
        while True:
            request = {**body, **self._structured_fields(json_schema)}
            resp = self._send("POST", self.url + "/chat/completions", body=request, read_timeout=self.timeout)
            if resp.status_code < 400:
                return resp
            message = _error_text(resp)
            resp.close()
            lowered = message.lower()
            # llama-cpp-python's server answers a spelling it does not know with a 500, not a 400.
            if (
                resp.status_code in (400, 422, 500)
                and json_schema is not None
                and self._structured is not None
                and any(word in lowered for word in _STRUCTURED_WORDS)
            ):
                refused = self._structured
                self._structured = _next_spelling(refused, self.flavour)
                log.warning(
                    "%s refused %s (%s); asking %s from now on",
                    self.url,
                    refused,
                    message[:200],
                    f"with {self._structured}" if self._structured else "without a schema",
                )
                continue
            reason = "context_overflow" if any(word in lowered for word in _OVERFLOW_WORDS) else "http_error"
            raise BadAnswer(
                reason, f"the LLM server refused the request: {resp.status_code} {message}", status=resp.status_code
            )

    def _structured_fields(self, json_schema: dict | None) -> dict:
        if json_schema is None or self._structured is None:
            return {}
        if self._structured == "json_schema":  # llama.cpp's own spelling
            return {"json_schema": json_schema}
        if self._structured == "json_object":  # llama-cpp-python's server
            return {"response_format": {"type": "json_object", "schema": json_schema}}
        name = re.sub(r"[^A-Za-z0-9_-]", "_", str(json_schema.get("title") or "answer"))[:64]
        spec = {"name": name, "strict": True, "schema": json_schema}
        return {"response_format": {"type": "json_schema", "json_schema": spec}}

    # -- answers ---------------------------------------------------------------------

    def _read_json(self, resp: requests.Response) -> _Answer:
        try:
            raw = resp.content
        except requests.RequestException as exc:
            raise _broken(exc, _Answer(), self) from None
        try:
            data = json.loads(raw)
        except ValueError:
            raise BadAnswer("malformed", f"the LLM server's answer is not JSON: {raw[:200]!r}") from None
        if isinstance(data, dict) and "error" in data:
            raise BadAnswer("http_error", f"the LLM server reported an error: {_error_message(data)}")
        try:
            choice = data["choices"][0]
            content = choice["message"].get("content") or ""
            if not isinstance(content, str):
                raise TypeError(type(content).__name__)
        except (KeyError, IndexError, TypeError, AttributeError):
            raise BadAnswer(
                "malformed", f"the LLM server's answer has no choices[0].message.content: {raw[:200]!r}"
            ) from None
        usage = data.get("usage")
        return _Answer(
            text=content,
            finish_reason=choice.get("finish_reason"),
            model=data.get("model"),
            usage=usage if isinstance(usage, dict) else {},
        )

    def _read_stream(self, resp: requests.Response, on_token: Callable[[str], None] | None, started: float) -> _Answer:
        answer = _Answer()
        pieces: list[str] = []
        done = False
        try:
            for line in _lines(resp):
                if line.startswith("error:"):  # llama.cpp reports failures mid-stream this way
                    raise BadAnswer("http_error", f"the LLM server reported an error: {line[6:].strip()}")
                if not line.startswith("data:"):
                    continue  # comments (keep-alives), event names, blank separators
                payload = line[5:].strip()
                if payload == "[DONE]":
                    done = True
                    break
                try:
                    event = json.loads(payload)
                except ValueError:
                    event = None
                if not isinstance(event, dict):
                    raise BadAnswer(
                        "malformed", f"the LLM server streamed a line that is not JSON: {payload[:200]!r}"
                    )
                if "error" in event:
                    raise BadAnswer("http_error", f"the LLM server reported an error: {_error_message(event)}")
                answer.model = event.get("model") or answer.model
                if isinstance(event.get("usage"), dict):
                    answer.usage = event["usage"]
                choices = event.get("choices")
                if not choices or not isinstance(choices[0], dict):
                    continue
                delta = choices[0].get("delta") or {}
                text = delta.get("content")
                thinking = delta.get("reasoning_content") or delta.get("reasoning")
                if (text or thinking) and answer.first_token_seconds is None:
                    answer.first_token_seconds = time.monotonic() - started
                    _set_read_timeout(resp, self.stall_timeout)
                if isinstance(text, str) and text:
                    pieces.append(text)
                    answer.pieces += 1
                    if on_token is not None:
                        on_token(text)
                answer.finish_reason = choices[0].get("finish_reason") or answer.finish_reason
        except requests.RequestException as exc:
            answer.text = "".join(pieces)
            raise _broken(exc, answer, self) from None
        except BadAnswer as exc:
            exc.partial_text = "".join(pieces)
            raise
        answer.text = "".join(pieces)
        if not done and answer.finish_reason is None:
            raise BadAnswer(
                "disconnected",
                f"the LLM server at {self.url} ended the stream after {len(answer.text)} characters of the answer, "
                "without finishing it",
                partial_text=answer.text,
            )
        return answer


def _broken(exc: requests.RequestException, answer: _Answer, llm: HttpLLM) -> BadAnswer:
    """Why reading an answer's body failed: silence (timeout, stall) or a dropped connection."""
    cause = exc.args[0] if exc.args else None
    if isinstance(cause, urllib3.exceptions.ReadTimeoutError):
        # The socket timeout is `timeout` until the first token, `stall_timeout` after it.
        if answer.first_token_seconds is None:
            return BadAnswer(
                "timeout", f"the LLM server at {llm.url} began an answer, then sent nothing for {llm.timeout:g} s"
            )
        where = f"after {len(answer.text)} characters of the answer" if answer.text else \
            "while still thinking, before any answer text"
        return BadAnswer(
            "stalled",
            f"the LLM server at {llm.url} went silent for {llm.stall_timeout:g} s {where}",
            partial_text=answer.text,
        )
    return BadAnswer(
        "disconnected",
        f"the connection to the LLM server at {llm.url} broke off after {len(answer.text)} characters "
        f"of the answer: {exc}",
        partial_text=answer.text,
    )


def _lines(resp: requests.Response):
    """The body's lines as they arrive (each HTTP chunk is yielded as soon as it is read)."""
    pending = b""
    for chunk in resp.iter_content(chunk_size=None):
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            yield line.rstrip(b"\r").decode("utf-8", "replace")
    if pending:
        yield pending.rstrip(b"\r").decode("utf-8", "replace")


def _set_read_timeout(resp: requests.Response, seconds: float) -> None:
    """Shorten the socket timeout once tokens flow: after that, a long silence means a stall.

    urllib3 resets the timeout when it reuses the connection, so this lasts one answer.
    """
    sock = getattr(getattr(resp.raw, "connection", None), "sock", None)
    if sock is not None:
        sock.settimeout(seconds)


def _split_url(url: str) -> tuple[str, str]:
    """The API base (".../v1") and the server root (where LM Studio, llama.cpp and Ollama keep their own endpoints)."""
    text = url.strip()
    if "://" not in text:
        text = "http://" + text
    problem = _url_problem(text)
    if problem:
        raise LLMConfigError(f"--llm-url {url}: {problem}")
    parts = urlsplit(text)
    path = parts.path.rstrip("/") or "/v1"  # people often give LM Studio's bare address
    root_path = path[: -len("/v1")] if path.endswith("/v1") else path
    return (
        urlunsplit((parts.scheme, parts.netloc, path, "", "")),
        urlunsplit((parts.scheme, parts.netloc, root_path, "", "")),
    )


def _url_problem(text: str) -> str | None:
    """Why `text` cannot be a server's address; checked up front, since requests finds some of
    these only when it first connects, and others (port 0) it does not find at all."""
    try:
        parts = urlsplit(text)
    except ValueError as exc:  # an unclosed "[" of an IPv6 address
        return f"not a URL ({exc})"
    if parts.scheme not in ("http", "https"):
        return f"the scheme must be http or https, not {parts.scheme!r}"
    if not parts.hostname:
        return "no host name"
    port = parts.netloc.rpartition("@")[2].rpartition("]")[2].partition(":")[2]  # after an IPv6 host's "]"
    if port and not (port.isascii() and port.isdigit()):
        return f"port {port!r} is not a number"
    if port and not 1 <= int(port) <= 65535:
        return f"port {port} is out of range (1-65535)"
    try:
        requests.Request("GET", text).prepare()  # requests' own checks: characters, IDNA
    except (requests.RequestException, ValueError) as exc:
        return str(exc)
    try:
        parts.hostname.encode("idna")  # what urllib3 checks only as it connects
    except UnicodeError:
        return f"host {parts.hostname!r} is not a valid host name (a label is empty or over 63 characters)"
    return None


def _from_lmstudio_v1(entry: dict) -> dict:
    instances = [i for i in entry.get("loaded_instances") or [] if isinstance(i, dict)]
    config = instances[0].get("config") if instances else None
    return {
        "id": entry["key"],
        "type": entry["type"],
        "state": "loaded" if instances else "not-loaded",
        "loaded_context_length": config.get("context_length") if isinstance(config, dict) else None,
        "max_context_length": entry.get("max_context_length"),
    }


def _is_embedding(entry: dict) -> bool:
    kind = entry.get("type")
    if isinstance(kind, str):
        return kind.startswith("embed")
    return "embed" in entry["id"].lower()


def _positive_int(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _json_or_none(resp: requests.Response):
    try:
        return resp.json()
    except ValueError:
        return None


def _error_message(data) -> str:
    error = data.get("error", data) if isinstance(data, dict) else data
    if isinstance(error, dict):
        error = error.get("message") or error
    return str(error)[:500]


def _error_text(resp: requests.Response) -> str:
    try:
        data = resp.json()
    except ValueError:
        return (resp.text or resp.reason or "").strip()[:500]
    return _error_message(data)


def _connection_failure(exc: requests.ConnectionError, connect_timeout: float) -> tuple[bool, str]:
    """Whether a connection was made at all (not for a refusal or an unknown host), and what went wrong."""
    if isinstance(exc, requests.ConnectTimeout):
        return False, f"no connection within {connect_timeout:g} s"
    cause = exc.args[0] if exc.args else None
    reason = getattr(cause, "reason", cause)  # urllib3's MaxRetryError wraps the failure itself
    if isinstance(reason, urllib3.exceptions.NameResolutionError):
        return False, "the host name does not resolve"
    connected = not isinstance(reason, urllib3.exceptions.NewConnectionError)
    text = str(exc)
    for known in ("Connection refused", "Connection reset", "Remote end closed"):
        if known in text:
            return connected, known.lower()
    return connected, text[:200]


def _silent(url: str, seconds: float) -> str:
    return f"the LLM server at {url} accepted the connection but did not answer within {seconds:g} s"


def _tries(count: int) -> str:
    return "1 try" if count == 1 else f"{count} tries"


def _excerpt(text: str, limit: int = 200) -> str:
    """An error body fit for a one-line message (servers and proxies also answer with HTML pages)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _log_call(completion: Completion, pieces: int) -> None:
    tokens = completion.completion_tokens or pieces
    generating = completion.seconds - (completion.first_token_seconds or 0.0)
    log.info(
        "%s: %s prompt tokens, %d ms, %.1f tokens/s",
        completion.model,
        completion.prompt_tokens if completion.prompt_tokens is not None else "?",
        completion.seconds * 1000,
        tokens / generating if generating > 0 else 0.0,
    )
