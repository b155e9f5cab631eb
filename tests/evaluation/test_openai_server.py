"""`rmt serve` as an OpenAI-compatible server, driven by the official `openai` client over loopback."""

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

openai = pytest.importorskip("openai")

from rmt.evaluation.hf import HFModel  # noqa: E402
from rmt.serving.server import create_app, serve_in_thread  # noqa: E402

from .conftest import wait_until  # noqa: E402

QUESTION = "Mary went to the kitchen. Where is Mary?"


@pytest.fixture(scope="module")
def client(hf_server):
    return openai.OpenAI(base_url=hf_server, api_key="unused", max_retries=0)


def chat(client, content=QUESTION, **kw):
    return client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": content}], **kw)


def test_chat_answer_is_the_local_greedy_answer(client, hf_model):
    got = chat(client, max_tokens=6, temperature=0)
    ids = hf_model.encode([{"role": "user", "content": QUESTION}])
    assert got.choices[0].message.content == hf_model.generate([ids], 6)[0]
    assert got.usage.prompt_tokens == len(ids) and got.object == "chat.completion"
    assert [m.id for m in client.models.list()] == ["tiny"]


def test_streaming_chat_equals_non_streaming(client):
    whole = chat(client, max_tokens=8, temperature=0).choices[0]
    chunks = list(chat(client, max_tokens=8, temperature=0, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.finish_reason]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= 1
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1  # sent in pieces


def test_n_choices_and_sampling(client):
    greedy = chat(client, max_tokens=5, temperature=0, n=3)
    assert [c.index for c in greedy.choices] == [0, 1, 2]
    assert len({c.message.content for c in greedy.choices}) == 1  # greedy: all the same
    sampled = chat(client, max_tokens=12, temperature=2.0, top_p=1.0, n=4, seed=1)
    assert len({c.message.content for c in sampled.choices}) > 1  # a random model at temperature 2
    again = chat(client, max_tokens=12, temperature=2.0, top_p=1.0, n=4, seed=1)
    assert [c.message.content for c in again.choices] == [c.message.content for c in sampled.choices]  # seeded


def test_max_tokens_and_stop(client, hf_model):
    long = chat(client, max_tokens=10, temperature=0).choices[0]
    short = chat(client, max_tokens=1, temperature=0).choices[0]
    ids = hf_model.encode([{"role": "user", "content": QUESTION}])
    ((first, _),) = hf_model.generate_ids([ids], 1)
    assert short.message.content == hf_model.decode(first) and short.finish_reason == "length"
    words = long.message.content.split()
    assert len(words) >= 2, long.message.content
    stopped = chat(client, max_tokens=10, temperature=0, stop=[words[1]]).choices[0]
    assert stopped.finish_reason == "stop" and words[1] not in stopped.message.content
    assert long.message.content.startswith(stopped.message.content)


def test_completions_endpoint(client, hf_model):
    got = client.completions.create(model="tiny", prompt=["Where is Mary?", "Mary went to the"], max_tokens=4,
                                    temperature=0, n=2)
    assert [c.index for c in got.choices] == [0, 1, 2, 3]
    for k, prompt in enumerate(["Where is Mary?", "Mary went to the"]):
        want = hf_model.generate([hf_model.encode(prompt)], 4)[0]
        assert got.choices[2 * k].text == want == got.choices[2 * k + 1].text
    streamed = client.completions.create(model="tiny", prompt="Where is Mary?", max_tokens=4, temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == got.choices[0].text
    echoed = client.completions.create(model="tiny", prompt="Where is Mary?", max_tokens=4, temperature=0, echo=True)
    assert echoed.choices[0].text == "Where is Mary?" + got.choices[0].text


@pytest.mark.parametrize("content", ["", " ", None, "MISSING"])
def test_empty_message_is_a_400_in_openai_shape(hf_server, content):
    """Was HTTP 500 (a float tensor of no tokens)."""
    message = {"role": "user"} if content == "MISSING" else {"role": "user", "content": content}
    r = httpx.post(f"{hf_server}/chat/completions", json={"model": "tiny", "messages": [message]})
    assert r.status_code == 400
    error = r.json()["error"]
    assert "messages[0].content" in error["message"] and error["type"] == "invalid_request_error"
    assert set(error) == {"message", "type", "param", "code"}


@pytest.mark.parametrize("body, status, needle", [
    (b"{not json", 400, "not valid JSON"),
    (b'{"model": "tiny"}', 400, "messages"),
    (b'{"model": "tiny", "messages": [{"content": "hi"}]}', 400, "role"),
    (b'{"model": "other", "messages": [{"role": "user", "content": "hi"}]}', 404, "not served here"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "n": 0}', 400, "n must be"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "temperature": 3}', 400, "temperature"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}', 400, "max_tokens"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "stop": ["a","b","c","d","e"]}', 400, "stop"),
])
def test_errors_are_openai_shaped(hf_server, body, status, needle):
    r = httpx.post(f"{hf_server}/chat/completions", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status and needle in r.json()["error"]["message"], r.text


def test_other_errors_are_openai_shaped(hf_server, client):
    r = httpx.get(f"{hf_server}/nothing-here")
    assert r.status_code == 404 and set(r.json()["error"]) == {"message", "type", "param", "code"}
    r = httpx.get(f"{hf_server}/chat/completions")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    with pytest.raises(openai.BadRequestError) as info:  # the client parses the shape
        chat(client, "word " * 600)  # the tiny model's window is 512
    assert info.value.code == "context_length_exceeded"
    r = httpx.post(f"{hf_server}/completions", json={"prompt": "hi", "logprobs": 1})
    assert r.status_code == 400 and "logprobs" in r.json()["error"]["message"]


def test_internal_errors_are_500_in_openai_shape(wordy_chat_dir):
    class Broken(HFModel):
        def _generate(self, *args, **kwargs):
            raise RuntimeError("boom")

    with serve_in_thread(create_app(Broken(str(wordy_chat_dir)), "tiny")) as url:
        r = httpx.post(f"{url}/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 500
    assert r.json()["error"]["type"] == "server_error" and "boom" in r.json()["error"]["message"]


def test_concurrent_requests_are_batched(wordy_chat_dir):
    """While the model decodes one request, the others queue; they are decoded together next."""
    gate = threading.Event()

    class Slow(HFModel):
        def _generate(self, *args, **kwargs):
            gate.wait(10)  # hold the first batch until every request is queued
            return super()._generate(*args, **kwargs)

    model = Slow(str(wordy_chat_dir))
    app = create_app(model, "tiny")
    prompts = [f"Where is {name}?" for name in ("Mary", "John", "Daniel", "Sandra", "the", "a", "Mary", "John")]
    with serve_in_thread(app) as url:
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)
        with ThreadPoolExecutor(len(prompts)) as pool:
            batcher = app.state.batcher
            # one request first, and only once it is decoding (held at the gate) the other seven:
            # sending all eight at once lets the first batch take however many arrived together
            futures = [pool.submit(chat, client, prompts[0], max_tokens=4, temperature=0)]
            wait_until(lambda: batcher.busy_rows == 1, 10, "the first request to decode")
            futures += [pool.submit(chat, client, p, max_tokens=4, temperature=0) for p in prompts[1:]]
            wait_until(lambda: batcher.queued() == len(prompts) - 1, 10, "seven requests to queue")
            first = batcher.busy_rows
            gate.set()
            answers = [f.result().choices[0].message.content for f in futures]
    # two decoding calls for eight requests: the one already decoding, then everything that queued
    assert first == 1 and batcher.generate_calls == 2 and batcher.largest_batch == len(prompts) - 1
    # batching changes nothing: each answer is the one the request gets on its own
    alone = [model.generate([model.encode([{"role": "user", "content": p}])], 4)[0] for p in prompts]
    assert answers == alone
