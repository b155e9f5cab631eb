"""The real pretrained instruct model (SmolLM2-135M-Instruct, `smollm2` fixture) evaluated and
served as its users run it: ChatML chat template, answers that end at its end of turn
(`<|im_end|>`), the benchmark prompt as the user turn; `rmt eval` with the template on and off;
`rmt serve` driven by the official `openai` client. Short prompts, short answers, bfloat16
weights: the whole file is meant to take well under a minute on 2 CPU cores."""

import pytest

from rmt.evaluation.hf import HFModel
from rmt.evaluation.store import ResultsStore

END_OF_TURN = "<|im_end|>"
QUESTION = "What is the capital of France? Answer with one word."


@pytest.fixture(scope="module")
def model(smollm2):
    return HFModel(str(smollm2), dtype="bfloat16")


def user(content):
    return [{"role": "user", "content": content}]


def test_generation_stops_at_the_end_of_turn(model):
    tok = model.tokenizer
    im_end = tok.convert_tokens_to_ids(END_OF_TURN)
    assert im_end in model.eos_ids()  # from the generation config and the tokenizer
    ids = model.encode(user(QUESTION))
    text = tok.decode(ids)
    assert text.endswith("<|im_start|>user\n" + QUESTION + "<|im_end|>\n<|im_start|>assistant\n"), text  # ChatML
    (row,) = model._generate([ids], 30)  # what HF generate produced
    assert im_end in row, tok.decode(row)  # it ended its turn on its own, within 30 tokens
    ((answer, hit_eos),) = model.generate_ids([ids], 30)
    assert hit_eos and answer == row[:row.index(im_end)]  # cut there: nothing after it kept
    decoded = model.decode(answer)
    assert decoded and END_OF_TURN not in decoded and "Paris" in decoded


def test_benchmark_prompt_is_the_user_turn_and_long_inputs_keep_it(model):
    from rmt.babilong import generate
    from rmt.evaluation.base import LocalRunner

    record = generate(task="qa2", length="1k", samples=1, seed=0)[0]
    runner = LocalRunner(model, max_new_tokens=20)
    messages = runner.prompt(record)
    assert [m["role"] for m in messages] == ["user"]  # instruction, examples, context, question: one turn
    content = messages[0]["content"]
    assert content.index("<example>") < content.index(record["input"]) < content.rindex("Question: " + record["question"])
    full = model.encode(messages)
    model.window = 600  # pretend the window is short: the haystack is cut, nothing else
    try:
        ids = runner.last_window(record)
    finally:
        model.window = 8192
    assert len(full) > 600 >= len(ids) + 20 >= 600 - 5
    text = model.tokenizer.decode(ids)
    head = model.tokenizer.decode(model.encode(runner.prompt({**record, "input": ""})))
    assert text.startswith(head.split("<context>")[0] + "<context>\n")  # system turn, instruction, examples
    assert text.endswith(record["question"] + "<|im_end|>\n<|im_start|>assistant\n")
    kept = text.split("<context>\n")[1].split("\n</context>")[0]
    assert len(kept) > 500 and record["input"].endswith(kept)  # the end of the haystack, as it was


def test_lm_eval_prompts_are_the_user_turn_too(model):
    pytest.importorskip("lm_eval")
    from rmt.babilong import generate
    from rmt.babilong.prompts import prompt_parts
    from rmt.evaluation.base import LocalRunner
    from rmt.evaluation.prompting import prompt_fn

    record = generate(task="qa2", length="0k", samples=1, seed=0)[0]
    runner = LocalRunner(model, prompt_fn(prompts="lm-eval"), max_new_tokens=20)
    (turn,) = runner.prompt(record)  # lm-eval's wording, all of it in the one user turn
    parts = prompt_parts("qa2", "lm-eval")
    assert turn["role"] == "user" and runner.prompt_set == "lm-eval, chat template"
    content = turn["content"]
    assert content.index(parts["instruction"]) < content.index(parts["examples"]) < content.index(record["input"])
    assert model.tokenizer.decode(model.encode([turn])).endswith(
        record["question"] + "<|im_end|>\n<|im_start|>assistant\n")


def rmt(capsys, *args):
    """`rmt ARGS` in this process (torch and transformers are imported once for the whole file)."""
    from rmt.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert exit_info.value.code == 0, err
    return out


def test_eval_with_and_without_the_chat_template(smollm2, tmp_path, capsys):
    store = tmp_path / "r.sqlite"
    args = ["eval", "smollm2-135m", "--tasks", "qa1", "--lengths", "0k", "--samples", "2", "--store", store,
            "--max-new-tokens", "10", "--dtype", "bfloat16", "--threads", "1", "--no-progress"]
    on = rmt(capsys, *args)
    assert "2 answered, 0 already done" in on and "prompts: builtin, chat template" in on
    off = rmt(capsys, *args, "--no-chat-template")
    assert "2 answered, 0 already done" in off  # nothing reused from the run with the template
    with ResultsStore(store) as s:
        rows = {(r.model, r.sample_id): r for r in s.results()}
    assert sorted(rows) == [("smollm2-135m", "0"), ("smollm2-135m", "1"),
                            ("smollm2-135m (no chat template)", "0"), ("smollm2-135m (no chat template)", "1")]
    for sid in ("0", "1"):
        with_template, without = rows[("smollm2-135m", sid)], rows[("smollm2-135m (no chat template)", sid)]
        assert with_template.prompt_set == "builtin, chat template"
        assert without.prompt_set == "builtin, no chat template"
        assert with_template.prompt_hash != without.prompt_hash and with_template.status == without.status == "ok"
        assert END_OF_TURN not in with_template.output and with_template.output.strip()
        assert with_template.n_tokens > without.n_tokens  # the template's system and turn tokens
    again = rmt(capsys, *args)  # the default again: its own answers are still there, reused
    assert "0 answered, 2 already done" in again
    report = rmt(capsys, "report", store)
    assert "smollm2-135m  (accuracy %" in report and "prompts: builtin, no chat template" in report


@pytest.fixture(scope="module")
def client(model):
    openai = pytest.importorskip("openai")
    from rmt.serving.server import create_app, serve_in_thread

    with serve_in_thread(create_app(model, "smollm2-135m")) as url:
        yield openai.OpenAI(base_url=url, api_key="unused", max_retries=0)


def test_served_chat_ends_at_the_end_of_turn(client, model):
    got = client.chat.completions.create(model="smollm2-135m", messages=user(QUESTION), max_tokens=30, temperature=0)
    choice = got.choices[0]
    assert choice.finish_reason == "stop" and choice.message.content.strip()
    assert END_OF_TURN not in choice.message.content and "Paris" in choice.message.content
    ids = model.encode(user(QUESTION))
    assert got.usage.prompt_tokens == len(ids)  # the chat template was applied
    assert choice.message.content == model.generate([ids], 30)[0]
    assert got.usage.completion_tokens < 30


def test_served_streaming_chat_ends_at_the_end_of_turn(client):
    whole = client.chat.completions.create(model="smollm2-135m", messages=user(QUESTION), max_tokens=30,
                                           temperature=0).choices[0]
    chunks = list(client.chat.completions.create(model="smollm2-135m", messages=user(QUESTION), max_tokens=30,
                                                 temperature=0, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.message.content and text.strip() and END_OF_TURN not in text
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
