"""What every model runner shares: the answer type, the runner interface, and local-model plumbing.

A runner turns BABILong records into raw answers. Evaluation asks it two things:

* ``runner.prompt(record)`` — exactly what the model will be asked (a string, or chat messages),
  deterministic and cheap: its hash identifies a cell's question, so a rerun skips done cells and
  redoes cells whose prompt changed;
* ``runner.identity()`` — what else makes its answers what they are: the weights (a content
  fingerprint) and the decoding settings. A stored answer is reused only when this and the prompt
  hash are the same as now;
* ``runner.answer(records)`` — one :class:`Answer` per record. Where the input does not fit a local
  model's context window, the haystack is cut from the left until the whole prompt (instruction,
  question and chat template intact) plus the answer fits, and the answer says so
  (``status="truncated"``): the model read the last window, as its users would run it. A prompt that
  does not fit even without its haystack (and an endpoint that refuses a long prompt) is
  ``status="over_window"``, unanswered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence, Union

from rmt.errors import UsageError
from rmt.evaluation.prompting import benchmark_prompt

Messages = list[dict]
Prompt = Union[str, Messages]
# (record, chat) -> prompt string (chat=False) or chat messages (chat=True)
PromptFn = Callable[[dict, bool], Prompt]

DEFAULT_MAX_NEW_TOKENS = 20  # BABILong answers are a word or two; the reference evaluates with 20


OK, TRUNCATED, OVER_WINDOW = "ok", "truncated", "over_window"
ANSWERED = (OK, TRUNCATED)  # statuses with an answer to score


@dataclass
class Answer:
    output: str | None
    status: str = OK  # "ok" | "truncated" (answered from the input's last window) | "over_window"
    n_tokens: int | None = None  # prompt tokens of the whole input (before any truncation)


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

    def identity(self) -> dict:
        """What produced this runner's answers besides the prompt: ``{"weights": fingerprint,
        "decoding": {...}}`` (JSON values). A runner that states nothing (``{}``) has its stored
        answers reused by model name and prompt alone."""
        return {}

    def answer(self, records: Sequence[dict]) -> list[Answer]:
        raise NotImplementedError

    def close(self) -> None:
        """Release resources (threads, connections)."""


def identity_of(runner) -> dict:
    """``runner.identity()``, or ``{}`` for a duck-typed runner without one (it states nothing)."""
    identity = getattr(runner, "identity", None)
    return identity() if callable(identity) else {}


def messages_to_text(messages: Messages) -> str:
    """Plain rendering of chat messages for models without a chat template: the contents in order,
    then nothing else (the benchmark prompt already ends where the answer starts)."""
    return "\n\n".join(str(m.get("content", "")) for m in messages if m.get("content"))


def check_chat_template(name: str, tokenizer, on: bool | None) -> None:
    """``--chat-template`` asks for a template the tokenizer does not have: one-line ValueError."""
    if on and not getattr(tokenizer, "chat_template", None):
        raise UsageError(f"--chat-template: the tokenizer of {name} has no chat template; "
                         "leave the flag out (its prompts are plain text)")


class LocalModel:
    """A model that runs in this process: a tokenizer, a context window, greedy batched decoding.

    Subclasses implement :meth:`_generate`. Used by the local runners and by ``rmt serve``.
    """

    name: str
    tokenizer = None
    window: int | None = None  # None: no limit (RMT streams any length)
    max_batch_tokens: int = 16384  # padded tokens per forward batch
    chat_template_on: bool = True  # apply the tokenizer's chat template, when it has one
    # Content fingerprint of the files it was loaded from (rmt.fingerprint); None for a
    # model object handed in directly (nothing to fingerprint).
    weights: str | None = None

    @property
    def has_chat_template(self) -> bool:
        """The tokenizer has a chat template (whether or not it is used)."""
        return bool(getattr(self.tokenizer, "chat_template", None))

    @property
    def uses_chat_template(self) -> bool:
        """Chat messages go through the tokenizer's chat template (it has one, and it is on)."""
        return self.has_chat_template and self.chat_template_on

    def set_chat_template(self, on: bool | None) -> None:
        """``None``: the default (on when the tokenizer has one); ``True``: on (an error when the
        tokenizer has none); ``False``: off (messages are joined as plain text)."""
        check_chat_template(self.name, self.tokenizer, on)
        self.chat_template_on = on is not False

    def encode(self, prompt: Prompt) -> list[int]:
        """Token ids of a prompt: chat messages through the chat template when it is used (plain
        concatenation otherwise), strings as they are."""
        if not isinstance(prompt, str):
            if self.uses_chat_template:
                text = self.tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
                return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
            prompt = messages_to_text(prompt)
        return list(self.tokenizer(prompt)["input_ids"])

    def settings(self) -> dict:
        """How the loaded weights compute, besides the files: the dtype they were loaded in and the
        window read. Recorded with every answer (not the device: it changes speed, not answers)."""
        torch_model = getattr(self, "model", None)
        dtype = getattr(torch_model, "dtype", None)
        return {"dtype": str(dtype).replace("torch.", "") if dtype is not None else None, "window": self.window}

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
        return _ids(getattr(self.tokenizer, "eos_token_id", None))

    def _generate(self, batch_ids: list[list[int]], max_new_tokens: int, **sampling) -> list[list[int]]:
        """The new token ids of each row (anything after an end-of-sequence token is ignored)."""
        raise NotImplementedError

    def decode(self, ids) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()


def _ids(value) -> set[int]:
    """Token ids from an int, a list of ints, or None."""
    if isinstance(value, int):
        return {value}
    return {v for v in (value or []) if isinstance(v, int)}


CHAT_TEMPLATE, NO_CHAT_TEMPLATE = "chat template", "no chat template"
NO_CHAT_SUFFIX = f" ({NO_CHAT_TEMPLATE})"  # the model's name in the store when its chat template is off


class LocalRunner(Runner):
    """Runner for a :class:`LocalModel`: benchmark prompt (chat messages through the tokenizer's
    chat template when it has one and it is on), batched greedy decoding; an input longer than the
    model's window is read as its last window (the haystack cut from the left, ``truncate=True``)
    or left unanswered as ``over_window`` (``truncate=False``).

    ``prompt_set`` (recorded with every answer) says which prompts were asked and, for a model
    whose tokenizer has a chat template, whether it was used: ``builtin, chat template`` or
    ``builtin, no chat template``. With the template off (not the default) answers are stored as
    ``MODEL (no chat template)``, beside the default's; and the two settings ask different prompts
    (chat messages vs one string), so their prompt hashes differ too: a rerun with the other
    setting never reuses the first one's answers."""

    def __init__(self, model: LocalModel, prompt_fn: PromptFn | None = None, batch_size: int = 8,
                 max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, name: str | None = None, truncate: bool = True):
        self.model = model
        self.prompt_fn = prompt_fn or benchmark_prompt
        self.prompt_set = getattr(self.prompt_fn, "prompt_set", "builtin")
        if self.model.has_chat_template and getattr(self.prompt_fn, "chat_form", True):
            self.prompt_set += ", " + (CHAT_TEMPLATE if self.model.uses_chat_template else NO_CHAT_TEMPLATE)
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.truncate = truncate
        # Off is not the model's default: its answers are stored under their own name, beside the
        # default's, so a report shows both and neither run's answers replace the other's.
        off = self.model.has_chat_template and not self.model.uses_chat_template and getattr(self.prompt_fn, "chat_form", True)
        self.name = name or (model.name + NO_CHAT_SUFFIX if off else model.name)

    def prompt(self, record: dict) -> Prompt:
        return self.prompt_fn(record, self.model.uses_chat_template)

    def identity(self) -> dict:
        return {"weights": self.model.weights,
                "decoding": {"greedy": True, "max_new_tokens": self.max_new_tokens, "last_window": self.truncate,
                             **self.model.settings()}}

    def answer(self, records: Sequence[dict]) -> list[Answer]:
        answers: list[Answer | None] = [None] * len(records)
        runnable, ids, statuses = [], [], []
        for i, record in enumerate(records):
            tokens = self.model.encode(self.prompt(record))
            status = OK
            if not self.model.fits(len(tokens), self.max_new_tokens):
                cut = self.last_window(record) if self.truncate else None
                if cut is None:
                    answers[i] = Answer(None, OVER_WINDOW, len(tokens))
                    continue
                status = TRUNCATED
            runnable.append(i)
            ids.append(cut if status == TRUNCATED else tokens)
            statuses.append((status, len(tokens)))
        for i, (status, n), text in zip(runnable, statuses, self.model.generate(ids, self.max_new_tokens)):
            answers[i] = Answer(text, status, n)
        return answers  # type: ignore[return-value]

    def last_window(self, record: dict) -> list[int] | None:
        """Token ids of ``record``'s prompt with its haystack cut from the left so that the whole
        prompt (instruction, examples, question, chat template intact) and ``max_new_tokens`` fit
        the model's window; None when even an empty haystack does not fit."""
        window, tokenizer = self.model.window, self.model.tokenizer
        if window is None:
            return self.model.encode(self.prompt(record))
        haystack = record["input"]
        try:  # where each token starts in the text: the kept haystack is a suffix of the original
            starts = [a for a, _ in tokenizer(haystack, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]]
            tail = lambda keep: haystack[starts[-keep]:]  # noqa: E731
        except (NotImplementedError, TypeError, KeyError, ValueError):  # a slow tokenizer: no offsets
            starts = tokenizer(haystack, add_special_tokens=False)["input_ids"]
            tail = lambda keep: tokenizer.decode(starts[-keep:], skip_special_tokens=True)  # noqa: E731
        empty = len(self.model.encode(self.prompt({**record, "input": ""})))
        keep = min(len(starts), window - self.max_new_tokens - empty)
        while keep > 0:
            ids = self.model.encode(self.prompt({**record, "input": tail(keep).lstrip()}))
            over = len(ids) + self.max_new_tokens - window
            if over <= 0:
                return ids
            keep -= over  # token boundaries moved at the cut: take that many fewer
        return None
