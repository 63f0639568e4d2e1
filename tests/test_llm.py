"""The HTTP LLM client against a real OpenAI-compatible server on loopback."""

from __future__ import annotations

import json
import logging
import time

import pytest

from auto_gvpie.config import ConfigError, load_settings
from auto_gvpie.llm import BadAnswer, HttpLLM, LLMConfigError, LLMError, LLMUnavailable, LLMUnreachable, open_llm
from tests.llm_server import LLMServer, Reply, refusing_url

USER = [{"role": "user", "content": "say something useful"}]
SCHEMA = {
    "title": "pixel program",
    "type": "object",
    "properties": {"name": {"type": "string"}},
    "required": ["name"],
}


def quick(url: str, **options) -> HttpLLM:
    """A client with retries and timeouts small enough for tests."""
    options = {"retries": 2, "backoff": 0.01, "timeout": 5.0, "stall_timeout": 5.0, **options}
    return HttpLLM(url, **options)


def bad_answer(llm: HttpLLM, **kwargs) -> BadAnswer:
    with pytest.raises(BadAnswer) as caught:
        llm.complete(USER, **kwargs)
    return caught.value


# -- discovery ------------------------------------------------------------------------------


def test_streams_tokens_from_the_auto_detected_model(caplog):
    caplog.set_level(logging.INFO, logger="auto_gvpie.llm.http")
    tokens: list[str] = []
    with LLMServer(["Hello there, patient world"]) as server:
        answer = quick(server.url).complete(USER, on_token=tokens.append)
    assert answer.text == "Hello there, patient world"
    assert tokens == ["Hello", " there,", " patient", " world"]
    assert answer.model == "test-model"
    assert answer.finish_reason == "stop"
    assert (answer.prompt_tokens, answer.completion_tokens) == (3, 4)
    assert answer.first_token_seconds is not None and 0 <= answer.first_token_seconds <= answer.seconds
    sent = server.requests[0]
    assert sent["model"] == "test-model" and sent["stream"] is True and sent["messages"] == USER
    assert "response_format" not in sent
    assert any("3 prompt tokens" in r.message and "tokens/s" in r.message for r in caplog.records)


@pytest.mark.parametrize("flavour", ["lmstudio", "lmstudio-v1", "plain"])
def test_picks_the_chat_model_over_an_embedding_model_listed_first(flavour):
    with LLMServer(["ok"], flavour=flavour, embedding_model="text-embedding-nomic-embed-text-v1.5") as server:
        llm = quick(server.url)
        assert llm.model == "test-model"
        llm.complete(USER)
    assert server.requests[0]["model"] == "test-model"


def test_a_server_with_only_embedding_models_is_not_usable():
    with LLMServer(model="nomic-embed-text", flavour="plain") as server:
        with pytest.raises(LLMUnreachable, match="offers no chat model .*nomic-embed-text.*pass --model"):
            quick(server.url).complete(USER)
        assert server.requests == []


@pytest.mark.parametrize(
    ("flavour", "told", "expected"),
    [
        ("lmstudio", 4096, 4096),  # loaded_context_length from /api/v0/models
        ("lmstudio-v1", 6144, 6144),  # loaded_instances[0].config.context_length from /api/v1/models
        ("llamacpp", 16384, 16384),  # default_generation_settings.n_ctx from /props
        ("ollama", 12288, 12288),  # num_ctx in /api/show's parameters
        ("ollama", None, 2048),  # Ollama's own small default, not the model's 131072
        ("lmstudio", None, 8192),  # the server does not say: the configured default
        ("plain", 32768, 8192),
    ],
)
def test_context_window_is_asked_from_the_server(flavour, told, expected):
    with LLMServer(flavour=flavour, context_length=told) as server:
        llm = quick(server.url, context_window=8192)
        assert llm.context_window == expected
        assert llm.flavour == {"lmstudio-v1": "lmstudio", "plain": "openai"}.get(flavour, flavour)


def test_given_model_is_used_and_discovery_happens_once():
    with LLMServer(["one", "two"], context_length=4096) as server:
        llm = quick(server.url, model="my-model")
        assert [llm.complete(USER).text for _ in range(2)] == ["one", "two"]
        assert llm.context_window == 8192  # LM Studio does not describe a model it does not know
    assert [body["model"] for body in server.requests] == ["my-model", "my-model"]
    assert server.hits.count("GET /v1/models") == 1


@pytest.mark.parametrize("spelling", ["http://127.0.0.1:{port}", "127.0.0.1:{port}/", "http://127.0.0.1:{port}/v1/"])
def test_bare_server_address_is_completed_with_v1(spelling):
    with LLMServer(["ok"]) as server:
        llm = quick(spelling.format(port=server.port))
        assert llm.url == server.url
        assert llm.complete(USER).text == "ok"


def test_wrong_path_reads_as_no_llm_server_there():
    with LLMServer() as server:
        url = server.url.replace("/v1", "/api")
        with pytest.raises(LLMUnreachable) as caught:
            quick(url).complete(USER)
    assert str(caught.value) == (
        f"no LLM server API at {url} (GET {url}/models answered 404 without a model list) — "
        "check --llm-url (LM Studio's is http://127.0.0.1:1234/v1)"
    )


def test_server_that_wants_an_api_key_is_named_as_such():
    with LLMServer(api_key="secret") as server:
        with pytest.raises(LLMUnreachable, match=r"refused access \(401\) — turn off its API-key authentication"):
            quick(server.url).complete(USER)


def test_loopback_calls_bypass_a_configured_proxy(monkeypatch):
    with refusing_url() as dead_proxy, LLMServer(["direct"]) as server:
        proxy = dead_proxy.removesuffix("/v1")
        for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.setenv(name, proxy)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        assert quick(server.url, retries=0).complete(USER).text == "direct"


def test_open_llm_builds_the_http_client_from_settings(tmp_path):
    with LLMServer(["from settings"], context_length=6000) as server:
        settings = load_settings({"home": str(tmp_path), "llm_url": server.url, "llm_retries": 0}, env={})
        llm = open_llm(settings)
        assert isinstance(llm, HttpLLM)
        assert (llm.model, llm.context_window, llm.retries) == ("test-model", 6000, 0)
        assert llm.complete(USER).text == "from settings"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://127.0.0.1:99999/v1", "port 99999 is out of range (1-65535)"),
        ("http://127.0.0.1:0/v1", "port 0 is out of range (1-65535)"),  # requests would quietly use port 80
        ("127.0.0.1:-1", "port '-1' is not a number"),
        ("http://localhost:12a4/v1", "port '12a4' is not a number"),
        ("ftp://example.com/v1", "the scheme must be http or https, not 'ftp'"),
        ("http://:1234/v1", "no host name"),
        ("http://[::1/v1", "not a URL"),
        ("http://exa mple:1234/v1", "contains invalid character ' '"),
        ("http://a..b:1234/v1", "host 'a..b' is not a valid host name"),  # urllib3 says so only when connecting
    ],
)
def test_malformed_url_is_a_config_error_at_construction(url, problem):
    with pytest.raises(LLMConfigError) as caught:
        HttpLLM(url)
    assert str(caught.value).startswith(f"--llm-url {url}: ") and problem in str(caught.value)
    assert isinstance(caught.value, LLMError) and isinstance(caught.value, ConfigError)  # exit 2, either way
    assert not isinstance(caught.value, LLMUnreachable)


@pytest.mark.parametrize("url", ["http://[::1]:1234/v1", "https://llm.example.com/v1", "http://user@host:1/v1",
                                 "localhost", "http://box:/v1"])
def test_well_formed_urls_are_accepted(url):
    HttpLLM(url)


def test_malformed_url_in_settings_is_a_config_error(tmp_path):
    settings = load_settings({"home": str(tmp_path), "llm_url": "http://127.0.0.1:99999/v1"}, env={})
    with pytest.raises(LLMConfigError, match="port 99999 is out of range"):
        open_llm(settings)


def test_count_tokens_errs_high():
    llm = HttpLLM("http://127.0.0.1:9/v1")  # counting never touches the server
    assert llm.count_tokens("") == 0
    assert llm.count_tokens("x" * 350) == 100
    assert llm.count_tokens("é" * 35) == 20  # two UTF-8 bytes each: non-ASCII text costs more tokens


# -- faults ---------------------------------------------------------------------------------


def test_refused_connection_is_unreachable_after_the_retries(caplog):
    caplog.set_level(logging.WARNING, logger="auto_gvpie.llm.http")
    with refusing_url() as url:
        llm = quick(url, retries=2)
        with pytest.raises(LLMUnreachable) as caught:
            llm.complete(USER)
    assert str(caught.value) == (
        f"no LLM server at {url} (connection refused, 3 tries) — start LM Studio, or pass --llm-url"
    )
    assert "refused" in caught.value.detail
    assert not isinstance(caught.value, LLMUnavailable)
    assert [r.message.split(";")[1].split(" in ")[0].strip() for r in caplog.records] == ["retry 1/2", "retry 2/2"]


def test_server_errors_are_retried_until_an_answer_comes():
    with LLMServer([Reply(status=500), Reply(status=503), "finally"]) as server:
        assert quick(server.url, retries=2).complete(USER).text == "finally"
    assert len(server.requests) == 3


def test_server_errors_beyond_the_retries_make_the_server_unavailable():
    # Not a failed attempt: the next task would fare no better, so the queue stops with tasks pending.
    oom = Reply(status=500, content="CUDA error: out of memory")
    with LLMServer([Reply(status=502, content="upstream fell over"), oom, oom, "too late"]) as server:
        with pytest.raises(LLMUnavailable) as caught:
            quick(server.url, retries=2).complete(USER)
    assert isinstance(caught.value, LLMUnreachable) and caught.value.status == 500
    assert str(caught.value) == (
        f"the LLM server at {server.url} answered HTTP 502/500 to all 3 tries: CUDA error: out of memory"
    )
    assert len(server.requests) == 3


@pytest.mark.parametrize(
    ("reply", "said"),
    [
        (Reply(status=500, content="Internal error:\n  model crashed"),
         "HTTP 500 to all 3 tries: Internal error: model crashed"),
        (Reply(status=503, headers={"Retry-After": "0"}, content="Loading model"),
         "HTTP 503 to all 3 tries: Loading model"),
        (Reply(status=429, headers={"Retry-After": "0"}), "HTTP 429 to all 3 tries: error 429"),
        (Reply(status=502, raw_body=b"<html>\n<head><title>502 Bad Gateway</title></head>\n</html>"),
         "HTTP 502 to all 3 tries: <html> <head><title>502 Bad Gateway</title></head> </html>"),
    ],
)
def test_server_answering_errors_to_everything_is_unavailable(reply, said):
    with LLMServer(answer_all=reply) as server:  # discovery included
        with pytest.raises(LLMUnavailable) as caught:
            quick(server.url).complete(USER)
    assert str(caught.value) == f"the LLM server at {server.url} answered {said}"
    assert "start LM Studio" not in str(caught.value)
    assert server.hits == ["GET /v1/models"] * 3


def test_one_try_is_named_as_such():
    with LLMServer(answer_all=Reply(status=500, content="no")) as server:
        with pytest.raises(LLMUnavailable, match=r"answered HTTP 500 to its only try: no$"):
            quick(server.url, retries=0).model


def test_server_that_accepts_but_never_answers_is_named_as_such():
    with LLMServer(answer_all=Reply(delay=30)) as server:
        started = time.monotonic()
        with pytest.raises(LLMUnreachable) as caught:
            quick(server.url, timeout=0.3).complete(USER)
        assert time.monotonic() - started < 3  # not retried: it would hang as long again
    assert str(caught.value) == (
        f"the LLM server at {server.url} accepted the connection but did not answer within 0.3 s"
    )
    assert not isinstance(caught.value, LLMUnavailable)


def test_server_that_hangs_up_without_answering_is_named_as_such():
    with LLMServer(answer_all=Reply(hang_up=True)) as server:
        with pytest.raises(LLMUnreachable) as caught:
            quick(server.url).complete(USER)
    assert str(caught.value) == (
        f"something at {server.url} accepted the connection but closed it without an answer "
        "(remote end closed, 3 tries)"
    )


def test_server_that_hangs_mid_answer_and_then_answers_nothing_is_unreachable():
    # A stall is the attempt's failure only while the server answers other requests: one that hung
    # would fail every task of the queue in turn.
    def hang(body):
        server.answer_all = Reply(delay=30)
        return Reply(content="one two three", stall_after=1)

    with LLMServer(responder=hang) as server:
        with pytest.raises(LLMUnreachable) as caught:
            quick(server.url, timeout=0.5, stall_timeout=0.2).complete(USER)
    assert str(caught.value) == (
        f"the LLM server at {server.url} accepted the connection but did not answer within 0.5 s; before that, "
        f"the LLM server at {server.url} went silent for 0.2 s after 3 characters of the answer"
    )


def test_server_gone_after_a_broken_stream_is_unreachable():
    def crash(body):
        server.answer_all = Reply(hang_up=True)
        return Reply(raw_body=b'data: {"choices": [{"index": 0, "delta": {"content": "half"}}]}\n\n')

    with LLMServer(responder=crash) as server:
        with pytest.raises(LLMUnreachable) as caught:
            quick(server.url).complete(USER)
    assert str(caught.value) == (
        f"something at {server.url} accepted the connection but closed it without an answer (remote end closed, "
        f"after: the LLM server at {server.url} ended the stream after 4 characters of the answer, "
        "without finishing it)"
    )


def test_429_waits_as_long_as_retry_after_says():
    with LLMServer([Reply(status=429, headers={"Retry-After": "1"}), "after the pause"]) as server:
        llm = quick(server.url, backoff=0.01)
        llm.model  # discovery out of the way, so only the chat call is timed
        started = time.monotonic()
        answer = llm.complete(USER)
        waited = time.monotonic() - started
    assert answer.text == "after the pause"
    assert waited >= 1.0  # the behaviour under test, not a speed target
    assert len(server.requests) == 2


def test_other_client_errors_are_not_retried():
    with LLMServer([Reply(status=404, content="model 'x' not found"), "unused"]) as server:
        failure = bad_answer(quick(server.url))
    assert (failure.reason, failure.status) == ("http_error", 404)
    assert "model 'x' not found" in str(failure)
    assert len(server.requests) == 1


@pytest.mark.parametrize("status", [400, 500])
def test_prompt_too_long_for_the_context_is_named(status):
    refusal = "the request exceeds the available context size, try increasing it (n_ctx: 4096)"
    with LLMServer([Reply(status=status, content=refusal)]) as server:
        failure = bad_answer(quick(server.url))
    assert (failure.reason, failure.status) == ("context_overflow", status)
    assert str(failure) == f"the LLM server refused the request: {status} {refusal}"
    assert len(server.requests) == 1  # the prompt's fault, even as a 500: the same prompt fails again


@pytest.mark.parametrize("stream", [True, False])
def test_slow_answer_past_the_timeout_and_the_next_call_still_works(stream):
    with LLMServer([Reply(content="too late", delay=3.0), "in time"]) as server:
        llm = quick(server.url, timeout=0.3, stream=stream)
        llm.model
        failure = bad_answer(llm)
        assert failure.reason == "timeout"
        assert str(failure) == f"the LLM server at {server.url} accepted the request but did not answer within 0.3 s"
        assert llm.complete(USER).text == "in time"
    assert len(server.requests) == 2  # a timed-out generation is not sent again


def test_stalled_stream_keeps_what_arrived():
    with LLMServer([Reply(content="one two three four", stall_after=2)]) as server:
        failure = bad_answer(quick(server.url, timeout=5.0, stall_timeout=0.3))
    assert failure.reason == "stalled"
    assert failure.partial_text == "one two"
    assert str(failure) == f"the LLM server at {server.url} went silent for 0.3 s after 7 characters of the answer"


def test_slow_prompt_processing_is_not_a_stall():
    with LLMServer([Reply(content="worth the wait", delay=0.6)]) as server:
        answer = quick(server.url, timeout=5.0, stall_timeout=0.2).complete(USER)
    assert answer.text == "worth the wait"


def test_stream_broken_off_without_finishing():
    half = b'data: {"choices": [{"index": 0, "delta": {"content": "half an"}, "finish_reason": null}]}\n\n'
    with LLMServer([Reply(raw_body=half)]) as server:
        failure = bad_answer(quick(server.url))
    assert failure.reason == "disconnected" and failure.partial_text == "half an"
    assert str(failure) == (
        f"the LLM server at {server.url} ended the stream after 7 characters of the answer, without finishing it"
    )


def test_error_reported_inside_a_stream():
    body = b'data: {"error": {"message": "model crashed"}}\n\n'
    with LLMServer([Reply(raw_body=body)]) as server:
        failure = bad_answer(quick(server.url))
    assert failure.reason == "http_error" and "model crashed" in str(failure)


@pytest.mark.parametrize(
    ("stream", "body"),
    [
        (False, b"{this is not json"),
        (False, b'{"object": "chat.completion", "choices": []}'),
        (False, b'{"choices": [{"message": {"content": ["a", "list"]}}]}'),
        (True, b"data: {oops\n\n"),
    ],
)
def test_malformed_answers(stream, body):
    with LLMServer([Reply(raw_body=body)]) as server:
        failure = bad_answer(quick(server.url, stream=stream))
    assert failure.reason == "malformed"


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("content", ["", "  \n "])
def test_empty_answer(stream, content):
    with LLMServer([Reply(content=content)]) as server:
        failure = bad_answer(quick(server.url, stream=stream))
    assert failure.reason == "empty"


@pytest.mark.parametrize("stream", [True, False])
def test_cut_off_answer_keeps_its_text(stream):
    with LLMServer([Reply(content="def f():\n    return", finish_reason="length")]) as server:
        failure = bad_answer(quick(server.url, stream=stream), max_tokens=7)
    assert failure.reason == "truncated"
    assert failure.partial_text == "def f():\n    return"
    assert server.requests[0]["max_tokens"] == 7


def test_server_that_ignores_stream_answers_in_one_piece():
    tokens: list[str] = []
    with LLMServer(["all at once"], stream_supported=False) as server:
        answer = quick(server.url).complete(USER, on_token=tokens.append)
    assert server.requests[0]["stream"] is True
    assert (answer.text, answer.first_token_seconds, tokens) == ("all at once", None, ["all at once"])
    assert answer.completion_tokens == 3


def test_thinking_before_the_answer_is_dropped():
    with LLMServer(["<think>\nthe user wants a word\n</think>\n\nword"]) as server:
        assert quick(server.url).complete(USER).text == "word"


# -- structured output ----------------------------------------------------------------------


def test_json_schema_is_sent_as_response_format():
    with LLMServer(['{"name": "boot"}']) as server:
        answer = quick(server.url).complete(USER, json_schema=SCHEMA)
    assert json.loads(answer.text) == {"name": "boot"}
    assert server.requests[0]["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "pixel_program", "strict": True, "schema": SCHEMA},
    }


def test_rejected_response_format_falls_back_and_is_remembered():
    with LLMServer(['{"name": "a"}', '{"name": "b"}'], reject_response_format=True) as server:
        llm = quick(server.url)
        assert [llm.complete(USER, json_schema=SCHEMA).text for _ in range(2)] == ['{"name": "a"}', '{"name": "b"}']
    kinds = [body.get("response_format", {}).get("type") for body in server.requests]
    assert kinds == ["json_schema", "json_object", None, None]  # both spellings refused once, then remembered
    assert all("json_schema" not in body for body in server.requests)
    assert all(body["messages"] == USER for body in server.requests)


def test_llamacpp_falls_back_to_its_own_json_schema_field():
    with LLMServer(['{"name": "a"}'], flavour="llamacpp", reject_response_format=True) as server:
        quick(server.url).complete(USER, json_schema=SCHEMA)
    first, second, third = server.requests
    assert first["response_format"]["type"] == "json_schema" and second["response_format"]["type"] == "json_object"
    assert third["json_schema"] == SCHEMA and "response_format" not in third


def test_llama_cpp_python_server_gets_json_object_with_the_schema():
    # Its server refuses the json_schema type with a 500 but enforces {"type": "json_object", "schema": ...}.
    with LLMServer(['{"name": "a"}', '{"name": "b"}'], accepted_response_formats=("json_object",),
                   reject_status=500) as server:
        llm = quick(server.url)
        assert [llm.complete(USER, json_schema=SCHEMA).text for _ in range(2)] == ['{"name": "a"}', '{"name": "b"}']
    assert [body["response_format"] for body in server.requests[1:]] == [{"type": "json_object", "schema": SCHEMA}] * 2


def test_rejection_without_a_schema_is_not_mistaken_for_one():
    with LLMServer([Reply(status=400, content="invalid schema for messages")]) as server:
        failure = bad_answer(quick(server.url))  # no json_schema asked: nothing to fall back from
    assert failure.reason == "http_error" and len(server.requests) == 1


def test_later_samples_ask_for_another_seed_and_some_temperature():
    with LLMServer(["first", "second"]) as server:
        llm = HttpLLM(server.url, retries=0)
        llm.complete([{"role": "user", "content": "hi"}])
        llm.complete([{"role": "user", "content": "hi"}], sample=2)
    first, second = server.requests
    assert "seed" not in first and "temperature" not in first  # the server's own settings
    assert second["seed"] == 2 and second["temperature"] > 0
