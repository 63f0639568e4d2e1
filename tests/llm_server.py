"""A real OpenAI-compatible chat server on loopback, scripted by the test that starts it.

    with LLMServer(["first answer", Reply(status=500), "second"]) as server:
        llm = HttpLLM(server.url, retries=1, backoff=0.01)
        ...
        server.requests  # the JSON bodies received on /chat/completions, in order

Replies are served first in, first out; when none is left, `responder(body)` answers if
given, else the server answers 500. It streams (SSE, chunked, one chunk per word) when
the request asks for it, and can impersonate LM Studio, llama.cpp or Ollama for context
discovery.

Setting `answer_all` to a Reply (an error status, a delay, a hang-up) makes the server
answer every request on every path with it, discovery included: a server that is up but
broken. A test may set it at any time, e.g. from a responder.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterator

FLAVOURS = ("lmstudio", "lmstudio-v1", "llamacpp", "ollama", "plain")


@dataclass
class Reply:
    content: str = ""
    finish_reason: str = "stop"
    status: int = 200
    headers: dict = field(default_factory=dict)
    delay: float = 0.0  # seconds before anything is sent
    raw_body: bytes | None = None  # sent verbatim as the body (a stream's body when streaming)
    stall_after: int | None = None  # stream this many content chunks, then hang (non-streamed: hang at once)
    token_delay: float = 0.0  # seconds between streamed chunks
    hang_up: bool = False  # close the connection without any answer (after the delay)


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        # A client that hangs up mid-answer (a timeout test, a killed worker) is expected here.
        import sys
        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)


class LLMServer:
    def __init__(
        self,
        replies=(),
        *,
        responder: Callable[[dict], str | Reply] | None = None,
        model: str = "test-model",
        context_length: int | None = None,
        flavour: str = "lmstudio",
        stream_supported: bool = True,
        reject_response_format: bool = False,
        accepted_response_formats: tuple[str, ...] = ("json_schema", "json_object"),
        reject_status: int = 400,
        embedding_model: str | None = None,
        api_key: str | None = None,
        answer_all: Reply | None = None,
    ) -> None:
        if flavour not in FLAVOURS:
            raise ValueError(f"flavour must be one of {FLAVOURS}, not {flavour!r}")
        self.model = model
        self.context_length = context_length
        self.flavour = flavour
        self.stream_supported = stream_supported
        # reject_response_format refuses the field whatever its type; accepted_response_formats
        # narrows the types (llama-cpp-python's server takes only json_object, and says so with a 500).
        self.accepted_response_formats = () if reject_response_format else accepted_response_formats
        self.reject_status = reject_status
        self.embedding_model = embedding_model  # listed before the chat model, to test model picking
        self.responder = responder
        self.api_key = api_key  # when set, every request needs "Authorization: Bearer <api_key>"
        self.answer_all = answer_all
        self.requests: list[dict] = []  # JSON bodies received on /chat/completions
        self.hits: list[str] = []  # "METHOD /path" of every request, in order
        self._replies: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self.push(*replies)
        self._httpd = _QuietServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.llm_server = self  # type: ignore[attr-defined]
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        # A short poll interval makes close() (and so every test using the server) quick.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="llm-server", daemon=True
        )

    def push(self, *replies: str | Reply) -> None:
        with self._lock:
            self._replies.extend(r if isinstance(r, Reply) else Reply(content=r) for r in replies)

    def start(self) -> LLMServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._closing.set()  # wakes handlers that are delaying or stalling
        if self._thread.is_alive():
            self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> LLMServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def _next_reply(self, body: dict) -> Reply:
        with self._lock:
            if self._replies:
                return self._replies.popleft()
        if self.responder is not None:
            answer = self.responder(body)
            return answer if isinstance(answer, Reply) else Reply(content=answer)
        return Reply(status=500, content="the test server has no scripted reply left")

    def _model_entries(self) -> list[dict]:
        ids = [self.embedding_model, self.model] if self.embedding_model else [self.model]
        return [{"id": name, "object": "model", "owned_by": self.flavour} for name in ids]


@contextlib.contextmanager
def refusing_url() -> Iterator[str]:
    """A loopback URL whose port refuses connections: bound, never listening, so no one else gets it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    finally:
        sock.close()


def _pieces(text: str) -> list[str]:
    """Word-sized pieces, roughly how servers stream tokens."""
    return re.findall(r"\s*\S+|\s+", text) or [""]


def _count_words(messages) -> int:
    if not isinstance(messages, list):
        return 0
    return sum(len(str(m.get("content", "")).split()) for m in messages if isinstance(m, dict))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked streams, as real servers do
    # Headers and body go out in separate writes; without this, Nagle's algorithm and the
    # client's delayed ACK add ~40 ms to every non-streamed reply.
    disable_nagle_algorithm = True
    server_version = "llm-test-server/1"

    @property
    def llm(self) -> LLMServer:
        return self.server.llm_server  # type: ignore[attr-defined]

    def log_message(self, format, *args) -> None:  # noqa: A002 - the base class's name
        pass  # tests read server.hits instead of stderr noise

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def _route(self, method: str) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        self.llm.hits.append(f"{method} {path}")
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        llm = self.llm
        try:
            if llm.answer_all is not None:
                reply = llm.answer_all
                if not (reply.delay and llm._closing.wait(reply.delay)):
                    self._send_reply(reply)
            elif llm.api_key and self.headers.get("Authorization") != f"Bearer {llm.api_key}":
                self._send_json(401, {"error": {"message": "Invalid or missing API key", "type": "invalid_api_key"}})
            elif method == "GET" and path == "/v1/models":
                self._send_json(200, {"object": "list", "data": llm._model_entries()})
            elif method == "GET" and path == "/api/v0/models" and llm.flavour == "lmstudio":
                self._send_json(200, {"object": "list", "data": self._lmstudio_entries()})
            elif method == "GET" and path == "/api/v1/models" and llm.flavour == "lmstudio-v1":
                self._send_json(200, {"models": self._lmstudio_v1_entries()})
            elif method == "GET" and path == "/props" and llm.flavour == "llamacpp":
                settings = {"n_ctx": llm.context_length} if llm.context_length else {}
                self._send_json(200, {"default_generation_settings": settings, "total_slots": 1})
            elif method == "POST" and path == "/api/show" and llm.flavour == "ollama":
                params = f"num_ctx {llm.context_length}\n" if llm.context_length else ""
                self._send_json(200, {"parameters": params, "model_info": {"llama.context_length": 131072}})
            elif method == "POST" and path == "/v1/chat/completions":
                self._chat(raw)
            else:
                self._send_json(404, {"error": {"message": f"Unexpected endpoint or method. ({method} {path})"}})
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (timeout, stall): nothing to tell it

    def _lmstudio_entries(self) -> list[dict]:
        llm = self.llm
        chat = {"id": llm.model, "object": "model", "type": "llm", "arch": "llama", "state": "loaded"}
        if llm.context_length:
            chat.update(max_context_length=max(llm.context_length, 32768), loaded_context_length=llm.context_length)
        entries = [chat]
        if llm.embedding_model:
            embed = {"id": llm.embedding_model, "object": "model", "type": "embeddings", "state": "loaded"}
            entries.insert(0, embed)
        return entries

    def _lmstudio_v1_entries(self) -> list[dict]:
        llm = self.llm
        config = {"context_length": llm.context_length} if llm.context_length else {}
        chat = {"type": "llm", "key": llm.model, "loaded_instances": [{"id": llm.model, "config": config}],
                "max_context_length": max(llm.context_length or 0, 32768)}
        entries = [chat]
        if llm.embedding_model:
            entries.insert(0, {"type": "embedding", "key": llm.embedding_model, "loaded_instances": [],
                               "max_context_length": 2048})
        return entries

    def _chat(self, raw: bytes) -> None:
        llm = self.llm
        try:
            body = json.loads(raw)
        except ValueError:
            self._send_json(400, {"error": {"message": "request body is not JSON"}})
            return
        llm.requests.append(body)
        kind = (body.get("response_format") or {}).get("type")
        if "response_format" in body and kind not in llm.accepted_response_formats:
            message = f"'response_format' of type {kind!r} is not supported by this server"
            self._send_json(llm.reject_status, {"error": {"message": message, "type": "invalid_request_error"}})
            return
        reply = llm._next_reply(body)
        if reply.delay and llm._closing.wait(reply.delay):
            return
        streaming = bool(body.get("stream")) and llm.stream_supported and reply.status == 200
        if reply.stall_after is not None and not streaming:
            llm._closing.wait()
            return
        if reply.status != 200 or reply.hang_up:
            self._send_reply(reply)
        elif streaming:
            self._stream(body, reply)
        elif reply.raw_body is not None:
            self._send_bytes(200, reply.raw_body, "application/json", reply.headers)
        else:
            self._send_json(200, self._completion(body, reply), reply.headers)

    def _send_reply(self, reply: Reply) -> None:
        """A hang-up, or the reply's status with its `raw_body` or an OpenAI error body."""
        if reply.hang_up:
            self.close_connection = True
            return
        payload = reply.raw_body
        if payload is None:
            message = reply.content or f"error {reply.status}"
            payload = json.dumps({"error": {"message": message, "code": reply.status}}).encode()
        self._send_bytes(reply.status, payload, "application/json", reply.headers)

    def _completion(self, body: dict, reply: Reply) -> dict:
        return {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.llm.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply.content},
                    "finish_reason": reply.finish_reason,
                }
            ],
            "usage": self._usage(body, len(_pieces(reply.content))),
        }

    def _usage(self, body: dict, completion_tokens: int) -> dict:
        prompt = _count_words(body.get("messages"))
        total = prompt + completion_tokens
        return {"prompt_tokens": prompt, "completion_tokens": completion_tokens, "total_tokens": total}

    def _stream(self, body: dict, reply: Reply) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        for name, value in reply.headers.items():
            self.send_header(name, str(value))
        self.end_headers()
        if reply.raw_body is not None:
            self._chunk(reply.raw_body)
            self._chunk(b"")
            return
        closing = self.llm._closing
        base = {"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": self.llm.model}
        pieces = _pieces(reply.content)
        self._event({**base, "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]})
        for sent, piece in enumerate(pieces):
            if reply.stall_after is not None and sent >= reply.stall_after:
                closing.wait()
                return
            if reply.token_delay and closing.wait(reply.token_delay):
                return
            self._event({**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
        final = {"index": 0, "delta": {}, "finish_reason": reply.finish_reason}
        self._event({**base, "choices": [final], "usage": self._usage(body, len(pieces))})
        self._chunk(b"data: [DONE]\n\n")
        self._chunk(b"")

    def _event(self, data: dict) -> None:
        self._chunk(b"data: " + json.dumps(data).encode() + b"\n\n")

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _send_json(self, status: int, data: dict, headers: dict | None = None) -> None:
        self._send_bytes(status, json.dumps(data).encode(), "application/json", headers or {})

    def _send_bytes(self, status: int, payload: bytes, content_type: str, headers: dict) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in headers.items():
            self.send_header(name, str(value))
        self.end_headers()
        self.wfile.write(payload)
        self.wfile.flush()
