"""The OpenAI-compatible server and the endpoint client, over real HTTP on loopback."""

import os
import re
import subprocess
import sys
import threading

import httpx
import pytest

from rmt.evaluation.endpoint import EndpointClient, EndpointError, EndpointRunner
from rmt.evaluation.evaluate import evaluate, load_runner
from rmt.evaluation.hf import HFModel
from rmt.serving.server import create_app, free_socket, serve_in_thread


@pytest.fixture(scope="module")
def chat_model(tiny_chat_dir):
    return HFModel(str(tiny_chat_dir))


def test_served_model_answers_like_the_local_runner(chat_model, records_0k, tmp_path):
    local = load_runner(str(chat_model.name), max_new_tokens=5)
    with serve_in_thread(create_app(chat_model, "tiny")) as url:
        assert httpx.get(f"{url}/models").json()["data"][0]["id"] == "tiny"
        client = EndpointClient(url, "tiny", concurrency=3, max_tokens=5, cache=tmp_path / "cache.sqlite")
        remote = EndpointRunner(client)
        assert remote.prompt(records_0k[0]) == local.prompt(records_0k[0])  # same benchmark messages
        got = remote.answer(records_0k)
        assert [a.output for a in got] == [a.output for a in local.answer(records_0k)]
        sent = client.requests_sent
        assert sent == len(records_0k)
        # the cache answers a rerun without a single request
        assert [a.output for a in remote.answer(records_0k)] == [a.output for a in got]
        assert client.requests_sent == sent
        # a wrong model name is the server's 404, reported as one line naming the URL
        wrong = EndpointClient(url, "other", max_retries=0)
        with pytest.raises(EndpointError, match=r"HTTP 404.*not served here"):
            wrong.chat([{"role": "user", "content": "hi"}])
        client.close()


def test_over_window_through_the_server(tmp_path, tiny_chat_dir, records_1k):
    model = HFModel(str(tiny_chat_dir))
    with serve_in_thread(create_app(model, "tiny")) as url:
        runner = load_runner(f"openai:tiny@{url}", max_retries=0, cache=None)
        summary = evaluate(runner, records_1k, tmp_path / "r.sqlite", progress=False)
        runner.close()
    assert summary.over_window == len(records_1k)


def flaky_app(failures: list[int]):
    """An OpenAI-like handler that answers the statuses in `failures` first, then 200."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    app = FastAPI()
    app.state.calls = 0
    lock = threading.Lock()

    @app.post("/v1/chat/completions")
    def chat(body: dict):
        with lock:
            app.state.calls += 1
            n = app.state.calls
        if n <= len(failures):
            return JSONResponse(status_code=failures[n - 1], content={"error": {"message": "try later"}},
                                headers={"Retry-After": "0"} if failures[n - 1] == 429 else {})
        text = body["messages"][-1]["content"]
        return {"choices": [{"message": {"role": "assistant", "content": "echo " + text[-20:]}}]}

    return app


def test_retries_with_backoff_on_429_and_5xx(tmp_path):
    app = flaky_app([429, 503, 500])
    with serve_in_thread(app) as url:
        client = EndpointClient(url, "m", max_retries=4, backoff=0.01, cache=tmp_path / "c.sqlite")
        assert client.chat([{"role": "user", "content": "Where is Mary?"}]) == "echo Where is Mary?"
        assert app.state.calls == 4 and client.requests_sent == 4
        # cached: same question again costs no request
        assert client.chat([{"role": "user", "content": "Where is Mary?"}]) == "echo Where is Mary?"
        assert app.state.calls == 4
        client.close()

    app = flaky_app([503] * 10)
    with serve_in_thread(app) as url:
        client = EndpointClient(url, "m", max_retries=2, backoff=0.01)
        with pytest.raises(EndpointError, match=re.escape(f"{url}/chat/completions") + r" answered HTTP 503 after 3"):
            client.chat([{"role": "user", "content": "x"}])
        assert app.state.calls == 3
        client.close()


def test_unreachable_endpoint_names_the_url():
    sock = free_socket()  # bound but never listening: connection refused
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    try:
        client = EndpointClient(url, "m", max_retries=5, backoff=0.01)
        with pytest.raises(EndpointError, match=f"cannot reach endpoint {re.escape(url)}/chat/completions"):
            client.chat([{"role": "user", "content": "x"}])
        assert client.requests_sent == 3  # connection failures give up fast
    finally:
        sock.close()


def test_rmt_serve_cli_is_a_real_bounded_server(tiny_rmt_dir):
    """`rmt serve` on an RMT checkpoint: a free port, two requests, then it exits by itself."""
    proc = subprocess.Popen([sys.executable, "-m", "rmt", "serve", str(tiny_rmt_dir), "--port", "0",
                             "--model-id", "tiny-rmt", "--max-requests", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        lines = [proc.stdout.readline() for _ in range(3)]
        # start-up says what it is doing before the (long) imports and load, then what it loaded
        assert lines[0].startswith(f"rmt serve: loading {tiny_rmt_dir}"), lines
        assert lines[1].startswith("rmt serve: loaded RMTModel on cpu, no window"), lines
        match = re.search(r"serving tiny-rmt at (http://127\.0\.0\.1:\d+/v1)", lines[2])
        assert match, "".join(lines) + proc.stderr.read()
        url = match.group(1)
        import time

        for _ in range(100):  # the URL is printed just before uvicorn starts accepting
            try:
                models = httpx.get(f"{url}/models", timeout=5).json()
                break
            except httpx.ConnectError:
                time.sleep(0.05)
        assert models["data"][0]["id"] == "tiny-rmt"
        reply = httpx.post(f"{url}/chat/completions", timeout=30, json={
            "model": "tiny-rmt", "max_tokens": 3,
            "messages": [{"role": "user", "content": "Mary went to the kitchen . " * 40 + "Where is Mary ?"}]})
        body = reply.json()
        assert reply.status_code == 200, body
        assert body["usage"]["prompt_tokens"] > 100 and isinstance(body["choices"][0]["message"]["content"], str)
        assert proc.wait(timeout=30) == 0  # bounded: exits after its 2 requests
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def scripted_app(replies: list):
    """An OpenAI-like handler answering ``replies`` in turn: (status, headers, JSON body)."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    app = FastAPI()
    app.state.calls = 0

    @app.post("/v1/chat/completions")
    def chat(body: dict):
        status, headers, content = replies[min(app.state.calls, len(replies) - 1)]
        app.state.calls += 1
        return JSONResponse(status_code=status, content=content, headers=headers)

    return app


def completion(content):
    return (200, {}, {"choices": [{"message": {"role": "assistant", "content": content}}]})


@pytest.mark.parametrize("retry_after", ["-1", "nan", "-inf", "soon", "Wed, 21 Oct 2015 07:28:00 GMT"])
def test_a_bad_or_past_retry_after_does_not_abort_the_run(retry_after):
    """The server's Retry-After is a wish: a negative, NaN or unparsable one falls back to the
    client's own backoff (it used to reach time.sleep and abort the run), a past date waits 0 s."""
    app = scripted_app([(429, {"Retry-After": retry_after}, {"error": {"message": "slow down"}}),
                        completion("kitchen")])
    with serve_in_thread(app) as url:
        client = EndpointClient(url, "m", max_retries=2, backoff=0.01)
        assert client.chat([{"role": "user", "content": "Where is Mary?"}]) == "kitchen"
        assert app.state.calls == 2
        client.close()


def test_retry_after_is_read_as_seconds_or_an_http_date():
    from rmt.evaluation.endpoint import retry_after_seconds

    assert retry_after_seconds("2") == 2.0 and retry_after_seconds(" 0.5 ") == 0.5 and retry_after_seconds("0") == 0.0
    for bad in (None, "", "-1", "nan", "inf", "-inf", "soon"):
        assert retry_after_seconds(bad) is None, bad
    now = 1445412480.0  # Wed, 21 Oct 2015 07:28:00 GMT
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:30 GMT", now=now) == 30.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:27:00 GMT", now=now) == 0.0
    client = EndpointClient("http://127.0.0.1:9/v1", "m", backoff=1.0, max_backoff=8.0)
    assert client._delay(2, "-5") == 4.0 and client._delay(0, "100") == 8.0 and client._delay(0, "nan") == 1.0
    client.close()


@pytest.mark.parametrize("content, why", [({"text": "kitchen"}, "dict"), (5, "int"), (["kitchen"], "list"),
                                          ([{"type": "image_url", "image_url": {}}], "list"), (True, "bool")])
def test_a_reply_whose_content_is_not_text_is_one_error_and_not_cached(tmp_path, content, why):
    app = scripted_app([completion(content)])
    with serve_in_thread(app) as url:
        client = EndpointClient(url, "m", max_retries=0, cache=tmp_path / "c.sqlite")
        with pytest.raises(EndpointError, match=f"not a chat completion \\(its message content is a {why}, not text\\)"):
            client.chat([{"role": "user", "content": "Where is Mary?"}])
        client.close()
    assert not (tmp_path / "c.sqlite").exists()  # nothing was cached


def test_text_parts_and_null_content_are_text(tmp_path):
    app = scripted_app([completion([{"type": "text", "text": "the "}, {"type": "text", "text": "kitchen"}]),
                        completion(None)])
    with serve_in_thread(app) as url:
        client = EndpointClient(url, "m", max_retries=0, cache=tmp_path / "c.sqlite")
        assert client.chat([{"role": "user", "content": "a"}]) == "the kitchen"
        assert client.chat([{"role": "user", "content": "b"}]) == ""
        assert client.chat([{"role": "user", "content": "a"}]) == "the kitchen"  # from the cache
        assert app.state.calls == 2
        client.close()
