"""Evaluation: records -> runner -> scoring (``rmt.babilong``) -> results store, resumable.

    records = load_records_for_eval(tasks=["qa1"], lengths=["0k", "4k"], samples=10)
    runner = load_runner("path/to/model")          # HF dir/hub name, RMT checkpoint, or endpoint
    summary = evaluate(runner, records, "results.sqlite")
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Sequence

from tqdm.auto import tqdm

from rmt import babilong, hub, runs
from rmt.babilong import iter_records, score
from rmt.babilong import public as public_dataset
from rmt.babilong.io import load_records
from rmt.babilong.layout import is_layout, layout_cells, read_layout
from rmt.babilong.tasks import record_task
from rmt.errors import UsageError
from rmt.evaluation.base import ANSWERED, OVER_WINDOW, TRUNCATED, LocalRunner, Runner, check_chat_template, identity_of
from rmt.evaluation.endpoint import EndpointClient, EndpointRunner
from rmt.evaluation.prompting import prompt_fn, resolve_style
from rmt.evaluation.shard import Shard
from rmt.evaluation.store import Result, ResultsStore, StaleResultsError, prompt_hash, producer_key

ENDPOINT_PREFIX = "openai:"


@dataclass
class Summary:
    model: str
    done: int = 0  # answered now
    skipped: int = 0  # already in the store: same prompt, same producer (weights, decoding settings)
    rescored: int = 0  # skipped answers whose stored score or target was out of date (scored again, not asked again)
    over_window: int = 0
    truncated: int = 0  # answered from the last window of an input longer than the model's
    correct: int = 0
    seconds: float = 0.0
    by_cell: dict = field(default_factory=dict)  # (task, length) -> [correct, scored]

    def accuracy(self) -> float | None:
        scored = self.done - self.over_window
        return self.correct / scored if scored else None

    def add(self, result: Result) -> None:
        """Count one new answer."""
        self.done += 1
        self.truncated += result.status == TRUNCATED
        self.over_window += result.status == OVER_WINDOW
        cell = self.by_cell.setdefault((result.task, result.length), [0, 0])
        if result.correct is not None:
            self.correct += result.correct
            cell[0] += result.correct
            cell[1] += 1


def sample_ids(records: Sequence[dict]) -> list[str]:
    """A stable id per record: its own ``id`` or ``sample`` index when it has one, else its index
    within its (task, length) group; generation is seeded, and the prompt hash catches any change."""
    counters: dict = defaultdict(int)
    ids = []
    for record in records:
        key = (record.get("task"), str(record.get("length")))
        if record.get("id") is not None:
            ids.append(str(record["id"]))
        elif record.get("sample") is not None:
            ids.append(str(record["sample"]))
        else:
            ids.append(str(counters[key]))
        counters[key] += 1
    return ids


def _check_record(record: dict, index: int) -> None:
    missing = [k for k in ("input", "question", "target", "task", "length") if k not in record]
    if missing:
        raise UsageError(f"record {index} lacks field(s) {', '.join(missing)}; evaluation needs input, question, "
                         "target, task and length (as written by rmt generate)")


def _scores(record: dict, output: str) -> tuple[int, int]:
    """(official, strict) score of ``output`` for ``record``, by ``rmt.babilong.score``."""
    kwargs = dict(target=record["target"], question=record["question"], task=record_task(record))
    # looked up on the package at call time: the scoring rule of the moment (tests swap it)
    return int(babilong.score(output, mode="official", **kwargs)), int(babilong.score(output, mode="strict", **kwargs))


def _difference(stored: str | None, now: str) -> str:
    """What differs between a stored producer and this run's, in words."""
    if stored is None:
        return ("were written by an older rmt that did not record the weights and decoding settings behind them, "
                "so they cannot be checked")
    old, new = json.loads(stored), json.loads(now)
    parts = []
    if old.get("weights") != new.get("weights"):
        parts.append(f"other weights (stored {old.get('weights')}, now {new.get('weights')})")
    old_dec, new_dec = old.get("decoding") or {}, new.get("decoding") or {}
    changed = [f"{k} {old_dec.get(k)!r} -> {new_dec.get(k)!r}" for k in sorted(set(old_dec) | set(new_dec))
               if old_dec.get(k) != new_dec.get(k)]
    if changed:
        parts.append(f"other decoding settings ({', '.join(changed)})")
    others = sorted(k for k in set(old) | set(new) if k not in ("weights", "decoding") and old.get(k) != new.get(k))
    if others or not parts:
        parts.append(f"another producer ({', '.join(others) or 'runner identity'} differs)")
    return "were made with " + " and ".join(parts)


def evaluate(runner: Runner, records: Sequence[dict], store: ResultsStore | str | Path, progress: bool = True,
             model_name: str | None = None, shard: Shard | None = None) -> Summary:
    """Answer every record not yet in ``store`` and store each score as soon as it is known.

    A stored answer is reused only when its prompt hash and its producer (``runner.identity()``:
    the weights' fingerprint and the decoding settings) are this run's; its score is then computed
    again from the stored output (scoring is cheap and may have changed, the record's target too).
    Stored answers of the asked cells made by another producer raise :class:`StaleResultsError`
    (nothing is reused or replaced). ``shard``: this process's part of a launched run (see
    ``rmt.evaluation.shard``); only its rank 0 opens ``store``."""
    shard = shard or Shard()
    model = model_name or runner.name
    producer = producer_key(identity_of(runner))
    own_store = shard.is_main and not isinstance(store, ResultsStore)
    where = getattr(store, "path", store)
    store = ResultsStore(store) if own_store else store
    summary = Summary(model)
    try:
        cells, seen = [], set()
        for index, (record, sid) in enumerate(zip(records, sample_ids(records))):
            _check_record(record, index)
            cell = (record["task"], str(record["length"]), sid)
            if cell in seen:
                raise UsageError(f"two records are sample {sid} of {cell[0]}/{cell[1]} (record {index}); "
                                 "sample ids must be unique per task and length")
            seen.add(cell)
            cells.append((record, cell, prompt_hash(runner.prompt_key(record))))
        stored = shard.broadcast(store.stored(model) if shard.is_main else None)
        # Every process decides the same: each reads rank 0's view of the store, before anyone writes.
        reuse, todo, stale = [], [], []
        for record, cell, phash in cells:
            row = stored.get(cell)
            if row is None:
                todo.append((record, cell, phash))
            elif row.producer != producer:
                stale.append(row)
            elif row.prompt_hash == phash:
                reuse.append((record, row))
            else:  # the prompt changed: redone, and the answer replaced
                todo.append((record, cell, phash))
        if stale:
            first = stale[0]
            which = ", ".join(sorted({f"{r.task}/{r.length}" for r in stale}))
            raise StaleResultsError(
                f"results store {where} holds {len(stale)} answer(s) of {model!r} for the asked cells ({which}) that "
                f"{_difference(first.producer, producer)}; they are neither reused nor replaced: give a new store "
                f"(--store) or another model name (--name)")
        summary.skipped = len(reuse)
        # Batches of rows of about one length: a batch is padded to its longest row, so a short
        # record beside a long one would cost the long one's time. Stable: equal lengths keep their order.
        todo.sort(key=lambda item: len(item[0]["input"]) + len(item[0]["question"]))
        if shard.is_main:
            summary.rescored = _rescore(store, reuse)
        start = time.perf_counter()
        size = max(1, runner.batch_size)
        mine = shard.take(todo)
        per_process = -(-len(todo) // shard.world_size)  # ceil: the most cells any process answers
        steps = -(-per_process // size)  # every process takes the same number of steps (some empty)
        bar = tqdm(total=len(todo), desc=f"eval {model}", unit="sample",
                   disable=not progress or not todo or not shard.is_main)
        for step in range(steps):
            batch = mine[step * size:(step + 1) * size]
            answered = _answer(runner, batch, model, producer) if batch else []
            for results in shard.gather(answered):
                for result in results:
                    if shard.is_main:
                        store.put(result)
                    summary.add(result)
                bar.update(len(results))
        bar.close()
        summary.seconds = time.perf_counter() - start
    finally:
        if own_store:
            store.close()
    return summary


def _answer(runner: Runner, batch: list, model: str, producer: str) -> list[Result]:
    """The scored results of one batch of (record, cell, prompt hash)."""
    t0 = time.perf_counter()
    answers = runner.answer([record for record, _, _ in batch])
    per_sample = (time.perf_counter() - t0) / len(batch)
    results = []
    for (record, (task, length, sid), phash), answer in zip(batch, answers):
        correct = strict = None
        if answer.status in ANSWERED:
            correct, strict = _scores(record, answer.output)
        elif answer.status != OVER_WINDOW:
            raise UsageError(f"runner {runner.name} answered with unknown status {answer.status!r}")
        results.append(Result(model=model, task=task, length=length, sample_id=sid, prompt_hash=phash,
                              status=answer.status, output=answer.output, target=record["target"], correct=correct,
                              correct_strict=strict, n_tokens=answer.n_tokens, seconds=per_sample,
                              prompt_set=getattr(runner, "prompt_set", None), producer=producer))
    return results


def _rescore(store: ResultsStore, reuse: list) -> int:
    """Score the reused answers again (the rule or a record's target may have changed); store those
    whose score or target changed. How many did."""
    changed = 0
    for record, row in reuse:
        if row.status not in ANSWERED:
            continue
        correct, strict = _scores(record, row.output or "")
        if (correct, strict, record["target"]) != (row.correct, row.correct_strict, row.target):
            store.put(replace(row, correct=correct, correct_strict=strict, target=record["target"]))
            changed += 1
    return changed


# --------------------------------------------------------------------------------- data sources
def load_records_for_eval(tasks: Iterable[str] = ("qa1",), lengths: Iterable[str] = ("0k",), samples: int = 10,
                          seed: int = 0, data: str | Path | None = None, public: bool = False,
                          background: str | Path | None = None, tokenizer=None) -> list[dict]:
    """Records for an evaluation, from one of three sources:

    * ``data``: what ``rmt generate`` writes (a public-layout folder, JSONL, parquet, a datasets
      dir) or a saved ``DatasetDict`` of the public sets (filtered to tasks/lengths);
    * ``public=True``: the public ``RMT-team/babilong`` dataset (online);
    * otherwise generated here with ``rmt.babilong.generate`` (seeded, offline).
    """
    tasks, lengths = list(tasks), [str(x) for x in lengths]
    if samples < 1:
        raise UsageError(f"samples must be >= 1, got {samples}")
    if data is not None:
        return _select(_read_data(data, tasks, lengths), tasks, lengths, samples, source=str(data))
    if public:
        hub.prepare(public_dataset.PUBLIC_DATASET)  # no network: fail at once instead of retrying for a minute

        records = []
        for length in lengths:
            for task in tasks:
                try:
                    records.extend(public_dataset.load_public(task=task, length=length, samples=samples))
                except UsageError:  # ours (a bad task or length): already one line
                    raise
                except Exception as exc:  # offline, unknown config, hub errors, files missing from the cache: one line
                    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                    raise UsageError(f"cannot load {task}/{length} of the public BABILong dataset "
                                     f"(RMT-team/babilong; needs a connection or the HF cache): {first}") from None
        return records

    return list(iter_records(tasks, [_length_arg(x) for x in lengths], samples, seed, background, tokenizer))


def _read_data(data: str | Path, tasks: list[str], lengths: list[str]) -> list[dict]:
    """Records of a dataset on disk. A public-layout folder is read only for the asked cells. Rows
    without a ``length`` (a saved DatasetDict of one public config: split = task) take the one
    asked length; rows without a ``task`` are an error naming what is missing."""
    path = Path(data).expanduser()
    if not path.exists():
        raise UsageError(f"dataset not found: {data} (a folder, JSONL or parquet file written by rmt generate, "
                         "or a saved DatasetDict)")
    if is_layout(path):
        have = [f"{t}/{l}" for l, splits in layout_cells(path).items() for t in splits]
        missing = [f"{t}/{l}" for l in lengths for t in tasks if f"{t}/{l}" not in have]
        if missing:
            raise UsageError(f"dataset {data} has no samples for {', '.join(missing)}; it has: {', '.join(sorted(have))}")
        return read_layout(path, tasks, lengths)
    records = list(load_records(path))
    if any("length" not in r for r in records):
        if len(lengths) != 1:
            raise UsageError(f"dataset {data} does not say the length of its samples (a saved DatasetDict holds one "
                             f"config); evaluate one length at a time, e.g. --lengths {lengths[0]}")
        records = [{"length": lengths[0], **r} for r in records]
    if any("task" not in r for r in records):
        raise UsageError(f"dataset {data} has rows without a task (no 'task' column and no split named after one)")
    return records


def _length_arg(length: str):
    return int(length) if length.isdigit() else length


def _select(records: list[dict], tasks: list[str], lengths: list[str], samples: int, source: str) -> list[dict]:
    groups: dict = defaultdict(list)
    for record in records:
        groups[(record.get("task"), str(record.get("length")))].append(record)
    selected, missing = [], []
    for length in lengths:
        for task in tasks:
            group = groups.get((task, length))
            if not group:
                missing.append(f"{task}/{length}")
            else:
                selected.extend(group[:samples])
    if missing:
        have = sorted({f"{t}/{l}" for t, l in groups})
        raise UsageError(f"dataset {source} has no samples for {', '.join(missing)}; it has: {', '.join(have) or 'nothing'}")
    return selected


# ------------------------------------------------------------------------------------ runners
DEVICE_TYPES = ("cpu", "cuda", "mps")


def check_device(device: str | None) -> str | None:
    """``device`` if this torch build and machine have it; one-line ValueError otherwise."""
    if device is None:
        return None
    import torch  # lazy: endpoint evaluations do without torch

    try:
        kind = torch.device(device)
    except (RuntimeError, ValueError):
        kind = None
    if kind is None or kind.type not in DEVICE_TYPES:
        raise UsageError(f"--device {device!r} is not a device; allowed: cpu, cuda, cuda:N, mps")
    if kind.type == "cuda":
        if torch.version.cuda is None:
            raise UsageError(f"--device {device}: this torch build ({torch.__version__}) has no CUDA support; "
                             f"use --device cpu")
        if not torch.cuda.is_available():
            raise UsageError(f"--device {device}: no CUDA GPU is available on this machine; use --device cpu")
        if kind.index is not None and kind.index >= torch.cuda.device_count():
            raise UsageError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                             f"cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
    if kind.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {device}: MPS is not available here; use --device cpu")
    return device


def load_local_model(spec: str, device: str | None = None, dtype: str | None = None,
                     chat_template: bool | None = None):
    """An RMT checkpoint (a dir with ``rmt_config.json``) or an HF causal LM (dir or hub name).

    ``dtype``: float32, bfloat16 or float16 weights, or ``auto`` (``rmt.precision``: bf16 weights
    where bf16 is native and the model has 20M parameters or more, else as saved; ``rmt eval``'s
    default); None: as saved. ``model.precision`` says what it runs in and why. ``chat_template``:
    None applies the tokenizer's chat template when it has one, False never, True requires one."""
    # Lazy (torch): an endpoint evaluation does without it, and so does every bad-input error.
    from rmt.evaluation.hf import HFModel, torch_dtype
    from rmt.evaluation.rmt_runner import RMTModel
    from rmt.precision import AUTO, apply_dtype, check_dtype

    if spec.startswith(ENDPOINT_PREFIX):
        raise UsageError(f"{spec!r} is an endpoint; a local model (HF dir or hub name, RMT checkpoint) is needed here")
    device = check_device(device)
    if dtype is not None:
        check_dtype(dtype)  # an unknown name: one line before any loading
    name, located = spec, runs.locate(spec)  # a run: its final/; registered names and .gguf files: their conversion
    spec = located.where
    if located.rmt:
        model = RMTModel(located.model_dir, device=device)
        if dtype not in (None, AUTO):
            model.model.to(torch_dtype(dtype))
    else:
        tokenizer = runs.load_tokenizer(spec)
        check_chat_template(name, tokenizer, chat_template)  # before the weights load
        model = HFModel(spec, device=device, dtype=None if dtype == AUTO else dtype, tokenizer=tokenizer)
        model.name = name  # results are stored under the name the user gave, not the cache path
    if dtype == AUTO:
        model.precision = apply_dtype(model.model, AUTO, model.device)
    else:
        model.precision = f"{dtype} weights (asked)" if dtype else "weights as saved"
    model.set_chat_template(chat_template)
    return model


def load_runner(spec: str, *, device: str | None = None, batch_size: int = 8, max_new_tokens: int = 20,
                prompt_options: dict | None = None, prompt_style: str = "auto", api_key_env: str = "OPENAI_API_KEY", concurrency: int = 4,
                max_retries: int = 5, timeout: float = 60.0, cache: str | Path | None = None,
                rag_top_k: int = 0, rag_split: str = "sentences", rag_chunk_words: int = 64,
                name: str | None = None, dtype: str | None = None, chat_template: bool | None = None) -> Runner:
    """A runner from a model spec:

    * ``openai:MODEL@BASE_URL`` — an OpenAI-compatible endpoint (key from ``api_key_env``);
    * a directory with ``rmt_config.json`` — an RMT checkpoint (or a ``rmt train`` output dir:
      its ``final/`` model);
    * anything else — an HF causal LM (local directory, or hub name when online).

    ``rag_top_k > 0`` puts the retrieval baseline in front of the model (the reader).
    ``prompt_style``: ``benchmark`` (instruction, examples, post-prompt), ``plain`` (``input
    question``, what ``rmt train`` trains on) or ``auto`` (plain for ``rmt train`` checkpoints).
    ``dtype`` and ``chat_template``: local models only (see :func:`load_local_model`); endpoints
    apply their own chat template.
    """
    prompts = prompt_fn(resolve_style(prompt_style, spec), **(prompt_options or {}))
    if spec.startswith(ENDPOINT_PREFIX):
        if dtype is not None or chat_template is not None:
            raise UsageError(f"--dtype and --chat-template/--no-chat-template apply to local models; {spec} is an "
                             "endpoint (its server chooses both)")

        model, sep, url = spec[len(ENDPOINT_PREFIX):].rpartition("@")
        if not sep or not model or not url:
            raise UsageError(f"endpoint spec must be openai:MODEL@BASE_URL (e.g. openai:gpt-4o@https://api.openai.com/v1), got {spec!r}")
        client = EndpointClient(url, model, api_key_env=api_key_env, concurrency=concurrency, max_retries=max_retries,
                                timeout=timeout, cache=cache, max_tokens=max_new_tokens)
        runner: Runner = EndpointRunner(client, prompts, name=name if not rag_top_k else None)
    else:
        runner = LocalRunner(load_local_model(spec, device=device, dtype=dtype, chat_template=chat_template), prompts, batch_size=batch_size, max_new_tokens=max_new_tokens,
                             name=name if not rag_top_k else None)
    if rag_top_k:
        from rmt.evaluation.rag import RAGRunner, Retriever  # lazy: the `rag` extra (faiss, sentence-transformers)

        runner = RAGRunner(runner, Retriever(top_k=rag_top_k, split=rag_split, chunk_words=rag_chunk_words), name=name)
    return runner
