"""Evaluation: records -> runner -> scoring (``rmt.babilong``) -> results store, resumable.

    records = load_records_for_eval(tasks=["qa1"], lengths=["0k", "4k"], samples=10)
    runner = load_runner("path/to/model")          # HF dir/hub name, RMT checkpoint, or endpoint
    summary = evaluate(runner, records, "results.sqlite")
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from tqdm.auto import tqdm

from rmt import hub, runs
from rmt.babilong import iter_records, score
from rmt.babilong import public as public_dataset
from rmt.babilong.io import load_records
from rmt.babilong.layout import is_layout, layout_cells, read_layout
from rmt.babilong.tasks import record_task
from rmt.errors import UsageError
from rmt.evaluation.base import ANSWERED, OVER_WINDOW, TRUNCATED, LocalRunner, Runner, check_chat_template
from rmt.evaluation.endpoint import EndpointClient, EndpointRunner
from rmt.evaluation.prompting import prompt_fn, resolve_style
from rmt.evaluation.store import Result, ResultsStore, prompt_hash

ENDPOINT_PREFIX = "openai:"


@dataclass
class Summary:
    model: str
    done: int = 0  # answered now
    skipped: int = 0  # already in the store with the same prompt
    over_window: int = 0
    truncated: int = 0  # answered from the last window of an input longer than the model's
    correct: int = 0
    seconds: float = 0.0
    by_cell: dict = field(default_factory=dict)  # (task, length) -> [correct, scored]

    def accuracy(self) -> float | None:
        scored = self.done - self.over_window
        return self.correct / scored if scored else None


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


def evaluate(runner: Runner, records: Sequence[dict], store: ResultsStore | str | Path, progress: bool = True,
             model_name: str | None = None) -> Summary:
    """Answer every record not yet in ``store`` and store each score as soon as it is known."""
    own_store = not isinstance(store, ResultsStore)
    store = ResultsStore(store) if own_store else store
    model = model_name or runner.name
    summary = Summary(model)
    try:
        done = store.done(model)
        todo, cells = [], set()
        for index, (record, sid) in enumerate(zip(records, sample_ids(records))):
            _check_record(record, index)
            cell = (record["task"], str(record["length"]), sid)
            if cell in cells:
                raise UsageError(f"two records are sample {sid} of {cell[0]}/{cell[1]} (record {index}); "
                                 "sample ids must be unique per task and length")
            cells.add(cell)
            phash = prompt_hash(runner.prompt_key(record))
            if done.get(cell) == phash:
                summary.skipped += 1
                continue
            todo.append((record, cell, phash))
        start = time.perf_counter()
        bar = tqdm(total=len(todo), desc=f"eval {model}", unit="sample", disable=not progress or not todo)
        for first in range(0, len(todo), max(1, runner.batch_size)):
            batch = todo[first:first + max(1, runner.batch_size)]
            t0 = time.perf_counter()
            answers = runner.answer([record for record, _, _ in batch])
            per_sample = (time.perf_counter() - t0) / len(batch)
            for (record, (task, length, sid), phash), answer in zip(batch, answers):
                correct = strict = None
                if answer.status in ANSWERED:
                    summary.truncated += answer.status == TRUNCATED
                    kwargs = dict(target=record["target"], question=record["question"], task=record_task(record))
                    correct = int(score(answer.output, mode="official", **kwargs))
                    strict = int(score(answer.output, mode="strict", **kwargs))
                    summary.correct += correct
                elif answer.status == OVER_WINDOW:
                    summary.over_window += 1
                else:
                    raise UsageError(f"runner {runner.name} answered with unknown status {answer.status!r}")
                store.put(Result(model=model, task=task, length=length, sample_id=sid, prompt_hash=phash,
                                 status=answer.status, output=answer.output, target=record["target"],
                                 correct=correct, correct_strict=strict, n_tokens=answer.n_tokens,
                                 seconds=per_sample, prompt_set=getattr(runner, "prompt_set", None)))
                cell_stats = summary.by_cell.setdefault((task, length), [0, 0])
                if correct is not None:
                    cell_stats[0] += correct
                    cell_stats[1] += 1
                summary.done += 1
            bar.update(len(batch))
        bar.close()
        summary.seconds = time.perf_counter() - start
    finally:
        if own_store:
            store.close()
    return summary


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
                except (ValueError, FileNotFoundError):
                    raise
                except Exception as exc:  # offline, unknown config, hub errors: one line, not a trace
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
        raise FileNotFoundError(f"dataset not found: {data} (a folder, JSONL or parquet file written by rmt generate, "
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

    ``dtype``: float32, bfloat16 or float16 weights (default: as saved). ``chat_template``: None
    applies the tokenizer's chat template when it has one, False never, True requires one."""
    # Lazy (torch): an endpoint evaluation does without it, and so does every bad-input error.
    from rmt.evaluation.hf import HFModel, torch_dtype
    from rmt.evaluation.rmt_runner import RMTModel

    if spec.startswith(ENDPOINT_PREFIX):
        raise UsageError(f"{spec!r} is an endpoint; a local model (HF dir or hub name, RMT checkpoint) is needed here")
    device = check_device(device)
    if dtype is not None:
        torch_dtype(dtype)  # an unknown name: one line before any loading
    name, located = spec, runs.locate(spec)  # a run: its final/; registered names and .gguf files: their conversion
    spec = located.where
    if located.rmt:
        model = RMTModel(located.model_dir, device=device)
        if dtype is not None:
            model.model.to(torch_dtype(dtype))
    else:
        tokenizer = runs.load_tokenizer(spec)
        check_chat_template(name, tokenizer, chat_template)  # before the weights load
        model = HFModel(spec, device=device, dtype=dtype, tokenizer=tokenizer)
        model.name = name  # results are stored under the name the user gave, not the cache path
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
