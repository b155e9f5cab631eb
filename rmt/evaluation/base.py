"""What every model runner shares: the answer type, the runner interface, and local-model plumbing.

A runner turns BABILong records into raw answers. Evaluation asks it two things:

* ``runner.prompt(record)`` — exactly what the model will be asked (a string, or chat messages),
  deterministic and cheap: its hash identifies a cell's question, so a rerun skips done cells and
  redoes cells whose prompt changed;
* ``runner.answer(records)`` — one :class:`Answer` per record, ``status="over_window"`` where the
  input does not fit the model's context window (never truncated).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence, Union

Messages = list[dict]
Prompt = Union[str, Messages]
# (record, chat) -> prompt string (chat=False) or chat messages (chat=True)
PromptFn = Callable[[dict, bool], Prompt]

DEFAULT_MAX_NEW_TOKENS = 20  # BABILong answers are a word or two; the reference evaluates with 20


@dataclass
class Answer:
    output: str | None
    status: str = "ok"  # "ok" | "over_window"
    n_tokens: int | None = None


class Runner:
    """Interface of a model runner (HF model, RMT checkpoint, endpoint, RAG around any of them)."""

    name: str = "model"
    batch_size: int = 1
    prompt_set: str | None = None  # which prompts it asks (builtin, lm-eval, ...), recorded in the store

    def prompt(self, record: dict) -> Prompt:
        raise NotImplementedError

    def prompt_key(self, record: dict):
        """What identifies this record's cell for resuming (hashed into the store's prompt hash).
        The prompt itself by default; runners with costly prompts (RAG) return something cheaper."""
        return self.prompt(record)

    def answer(self, records: Sequence[dict]) -> list[Answer]:
        raise NotImplementedError

    def close(self) -> None:
        """Release resources (threads, connections)."""


def messages_to_text(messages: Messages) -> str:
    """Plain rendering of chat messages for models without a chat template: the contents in order,
    then nothing else (the benchmark prompt already ends where the answer starts)."""
    return "\n\n".join(str(m.get("content", "")) for m in messages if m.get("content"))


class LocalModel:
    """A model that runs in this process: a tokenizer, a context window, greedy batched decoding.

    Subclasses implement :meth:`_generate`. Used by the local runners and by ``rmt serve``.
    """

    name: str
    tokenizer = None
    window: int | None = None  # None: no limit (RMT streams any length)
    max_batch_tokens: int = 16384  # padded tokens per forward batch

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def encode(self, prompt: Prompt) -> list[int]:
        """Token ids of a prompt: chat messages through the chat template when the tokenizer has
        one (plain concatenation otherwise), strings as they are."""
        if not isinstance(prompt, str):
            if self.has_chat_template:
                text = self.tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
                return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
            prompt = messages_to_text(prompt)
        return list(self.tokenizer(prompt)["input_ids"])

    def fits(self, n_tokens: int, max_new_tokens: int) -> bool:
        return self.window is None or n_tokens + max_new_tokens <= self.window

    def generate(self, batch_ids: Sequence[list[int]], max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
                 **sampling) -> list[str]:
        """Answers (greedy unless ``sampling`` says ``do_sample=True``) for token-id prompts."""
        return [self.decode(ids) for ids, _ in self.generate_ids(batch_ids, max_new_tokens, **sampling)]

    def generate_ids(self, batch_ids: Sequence[list[int]], max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
                     **sampling) -> list[tuple[list[int], bool]]:
        """New token ids per prompt (any lengths; batched by similar length) and whether decoding
        stopped at an end-of-sequence token. ``sampling``: ``do_sample``, ``temperature``,
        ``top_p``, ``seed`` (models that cannot honour an option raise ValueError)."""
        outputs: list = [None] * len(batch_ids)
        order = sorted(range(len(batch_ids)), key=lambda i: len(batch_ids[i]))
        group: list[int] = []
        eos = self.eos_ids()

        def flush():
            if group:
                rows = self._generate([batch_ids[i] for i in group], max_new_tokens, **sampling)
                for i, row in zip(group, rows):
                    row = list(row)
                    ends = [k for k, t in enumerate(row) if t in eos]
                    outputs[i] = (row[:ends[0]], True) if ends else (row, False)
                group.clear()

        for i in order:
            longest = len(batch_ids[i])  # sorted ascending: the newest is the longest
            if group and (len(group) + 1) * (longest + max_new_tokens) > self.max_batch_tokens:
                flush()
            group.append(i)
        flush()
        return outputs

    def eos_ids(self) -> set[int]:
        eos = getattr(self.tokenizer, "eos_token_id", None)
        return {eos} if isinstance(eos, int) else set(eos or [])

    def _generate(self, batch_ids: list[list[int]], max_new_tokens: int, **sampling) -> list[list[int]]:
        """The new token ids of each row (anything after an end-of-sequence token is ignored)."""
        raise NotImplementedError

    def decode(self, ids) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()


class LocalRunner(Runner):
    """Runner for a :class:`LocalModel`: benchmark prompt (chat form when the model has a chat
    template), window check, batched greedy decoding."""

    def __init__(self, model: LocalModel, prompt_fn: PromptFn | None = None, batch_size: int = 8,
                 max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, name: str | None = None):
        from rmt.evaluation.prompting import benchmark_prompt

        self.model = model
        self.prompt_fn = prompt_fn or benchmark_prompt
        self.prompt_set = getattr(self.prompt_fn, "prompt_set", "builtin")
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.name = name or model.name

    def prompt(self, record: dict) -> Prompt:
        return self.prompt_fn(record, self.model.has_chat_template)

    def answer(self, records: Sequence[dict]) -> list[Answer]:
        answers: list[Answer | None] = [None] * len(records)
        runnable, ids = [], []
        for i, record in enumerate(records):
            tokens = self.model.encode(self.prompt(record))
            if not self.model.fits(len(tokens), self.max_new_tokens):
                answers[i] = Answer(None, "over_window", len(tokens))
            else:
                runnable.append(i)
                ids.append(tokens)
        for i, tokens, text in zip(runnable, ids, self.model.generate(ids, self.max_new_tokens)):
            answers[i] = Answer(text, "ok", len(tokens))
        return answers  # type: ignore[return-value]
