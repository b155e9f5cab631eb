"""`rmt diagnose`: what a trained checkpoint's memory does, segment by segment, out to a long input.

Where length generalisation breaks, this says why: does the state drift or settle over background
(its norm, its change from one segment to the next), does a gated write stay shut (write rate),
does the fact get written at all (the change in the segment that holds it), and how accuracy falls
with the distance between the supporting fact and the question.

The checkpoint's own task (its ``train_config.json``) gives the inputs: the evaluation set of
``TaskData`` at ``segments`` segments, the same samples ``rmt.training.trainer.evaluate`` scores.
They are read one segment at a time through the public streaming interface (``memory=`` /
``retrieval_store=`` carried from call to call, which equals one forward pass over the whole input),
so every state is seen. Per segment, averaged over the rows that are still reading:

* ``memory_norm``: the mean norm of a memory vector (RMT, RMT-R: the memory tokens);
* ``relative_change``: ||m_s - m_{s-1}|| / ||m_{s-1}|| over the whole state of a row (segment 1 is
  compared with the initial memory; ARMT's state is every layer's A, which starts at 0, so its
  segment 1 has none);
* ``cosine``: between m_s and m_{s-1} as flat vectors;
* ``write_rate`` (gated writes): the mean gate-open probability of the segment's write;
* ARMT: ``A_norm`` and ``z_norm``, per layer (Frobenius norm over heads).

Accuracy is exact match of the answer tokens (as ``evaluate``), overall and by distance in segments
from the earliest supporting fact to the question.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from rmt import runs
from rmt.atomic import atomic_file
from rmt.errors import UsageError
from rmt.memory import RecurrentMemoryTransformer
from rmt.outputs import check_output
from rmt.threads import set_threads
from rmt.training.config import TrainConfig
from rmt.training.tasks import TaskData

JSON_NAME = "diagnose.json"
PNG_NAME = "diagnose.png"
TEXT_NAME = "diagnose.txt"


# --------------------------------------------------------------------- the checkpoint
def find_checkpoint(checkpoint) -> tuple[Path, Path]:
    """(model dir, its train_config.json) for ``checkpoint``: an RMT model dir (``OUT/final``, a
    ``checkpoints/step-N`` dir) or the output dir of ``rmt train`` (its ``final/``)."""
    path = Path(checkpoint).expanduser()
    if not path.exists():
        raise UsageError(f"checkpoint not found: {checkpoint}")
    if not path.is_dir():
        raise UsageError(f"checkpoint {checkpoint} is a file; give a checkpoint directory (an rmt train output dir or its final/)")
    located = runs.locate(path)
    if not located.rmt:
        if runs.model_dir_of(path) is not None:
            raise UsageError(f"checkpoint {checkpoint} is a model without memory (no {runs.RMT_CONFIG_FILE}); "
                             f"rmt diagnose inspects the memory of an RMT, RMT-R or ARMT checkpoint")
        raise UsageError(f"{checkpoint} is not an RMT checkpoint (no {runs.RMT_CONFIG_FILE} in it or in its final/); "
                         f"give an rmt train output dir or its final/")
    if located.train_config is None:
        raise UsageError(f"no {runs.TRAIN_CONFIG_FILE} in {located.model_dir} or beside it: rmt diagnose runs the "
                         f"checkpoint's own task, as saved by rmt train")
    return located.model_dir, located.train_config


def default_out(model_dir: Path) -> Path:
    """``OUT/diagnose`` of the run: beside ``final/``, or beside ``checkpoints/`` for a step dir (never
    inside a checkpoint, which training rotates away)."""
    if model_dir.name == runs.FINAL_DIR:
        return model_dir.parent / runs.DIAGNOSE_DIR
    if model_dir.parent.name == runs.CHECKPOINTS_DIR:
        return model_dir.parent.parent / runs.DIAGNOSE_STEP_DIR.format(step_dir=model_dir.name)
    return model_dir / runs.DIAGNOSE_DIR


# --------------------------------------------------------------------- the trace
def _take(value, rows: int):
    """The first ``rows`` rows of a memory value (a tensor, an ARMTState or a RetrievalStore)."""
    if value is None:
        return None
    if dataclasses.is_dataclass(value):
        return type(value)(**{f.name: _take(getattr(value, f.name), rows) for f in dataclasses.fields(value)})
    return value[:rows]


def _flat(memory):
    """A row's whole state as one vector (batch, n): the memory tokens, or ARMT's A of every layer."""
    A = getattr(memory, "A", None)
    return (A if A is not None else memory).flatten(1).double()


class _Sums:
    """Per segment sums over rows (and their counts), turned into means at the end."""

    def __init__(self, n_segments: int):
        self.n = n_segments
        self.values: dict[str, list] = {}

    def add(self, name: str, segment: int, total, count: int = 1):
        lists = self.values.setdefault(name, [[0.0, 0] for _ in range(self.n)])
        if isinstance(total, (list, tuple)):  # one sum per layer
            cell = lists[segment]
            cell[0] = [a + b for a, b in zip(cell[0], total)] if isinstance(cell[0], list) else list(total)
            cell[1] += count
        else:
            lists[segment][0] += float(total)
            lists[segment][1] += count

    def means(self, name: str):
        if name not in self.values:
            return None
        out = []
        for total, count in self.values[name]:
            if not count:
                out.append(None)
            elif isinstance(total, list):
                out.append([round(t / count, 6) for t in total])
            else:
                out.append(round(total / count, 6))
        return out


def distance_buckets(distance: int) -> tuple[int, int]:
    """0, 1, 2-3, 4-7, 8-15, ...: distances in segments grouped by powers of two."""
    if distance <= 0:
        return (0, 0)
    lo = 1 << (distance.bit_length() - 1)
    return (lo, 2 * lo - 1)


def trace(model, examples: list[dict], segment_size: int, batch_size: int = 16, progress: bool = True,
          eos: bool = True) -> dict:
    """Read ``examples`` (``TaskData.example`` dicts) segment by segment; per-segment statistics,
    accuracy, and accuracy by fact-question distance. See the module docstring."""
    model.eval()
    device = model.device
    n_segments = max(math.ceil(len(e["ids"]) / segment_size) for e in examples)
    sums = _Sums(n_segments)
    rows_per_segment = [0] * n_segments
    correct: list[bool] = []
    # Relative change by where the segment lies from the (earliest supporting) fact: "before",
    # "at" (the segment that holds it) and "after". Segment 1 is left out: every kind's state
    # changes there from its initial value, fact or not.
    by_place = {"before": [0.0, 0], "at": [0.0, 0], "after": [0.0, 0]}
    bar = tqdm(total=sum(math.ceil(len(e["ids"]) / segment_size) for e in examples), desc="diagnose", unit="segment",
               disable=not progress, dynamic_ncols=True)
    with torch.no_grad():
        for first in range(0, len(examples), batch_size):
            # Longest first: the rows still reading at segment s are always a prefix of the batch.
            batch = sorted(examples[first:first + batch_size], key=lambda e: -len(e["ids"]))
            lengths = [len(e["ids"]) for e in batch]
            fact_segment = [min(e["fact_tokens"]) // segment_size if e["fact_tokens"] else None for e in batch]
            predicted = torch.full((len(batch), max(lengths)), -1, dtype=torch.long)
            memory, store = model.initial_memory(len(batch)), None
            for s in range(math.ceil(lengths[0] / segment_size)):
                start = s * segment_size
                k = sum(1 for n in lengths if n > start)
                chunks = [e["ids"][start:start + segment_size] for e in batch[:k]]
                width = max(map(len, chunks))
                ids = torch.tensor([c + [0] * (width - len(c)) for c in chunks], device=device)
                mask = torch.tensor([[1] * len(c) + [0] * (width - len(c)) for c in chunks], device=device)
                previous = _take(memory, k)
                out = model(input_ids=ids, attention_mask=mask, memory=previous, retrieval_store=_take(store, k))
                predicted[:k, start:start + width] = out.logits.argmax(-1).cpu()
                memory, store = out.memory, out.retrieval_store
                rows_per_segment[s] += k
                new, old = _flat(memory), _flat(previous)
                old_norm = old.norm(dim=1)
                change = (new - old).norm(dim=1) / old_norm
                cosine = (new * old).sum(dim=1) / (new.norm(dim=1) * old_norm)
                has_old = old_norm > 0  # ARMT's A is 0 before its first write
                if bool(has_old.any()):
                    sums.add("relative_change", s, change[has_old].sum(), int(has_old.sum()))
                    sums.add("cosine", s, cosine[has_old].sum(), int(has_old.sum()))
                    for row in range(k):
                        if s > 0 and has_old[row] and fact_segment[row] is not None:
                            place = "at" if fact_segment[row] == s else "before" if s < fact_segment[row] else "after"
                            by_place[place][0] += float(change[row])
                            by_place[place][1] += 1
                if isinstance(memory, torch.Tensor):
                    sums.add("memory_norm", s, memory.double().norm(dim=-1).mean(dim=1).sum(), k)
                else:  # ARMT: A (batch, layers, heads, key, value), z (batch, layers, heads, key)
                    sums.add("A_norm", s, memory.A.double().flatten(2).norm(dim=2).sum(0).tolist(), k)
                    sums.add("z_norm", s, memory.z.double().flatten(2).norm(dim=2).sum(0).tolist(), k)
                if out.write_rate is not None:
                    sums.add("write_rate", s, float(out.write_rate) * k, k)
                bar.update(k)
            for row, e in enumerate(batch):
                ids = torch.tensor(e["ids"])
                answer_start = len(e["ids"]) - e["n_answer"] - (1 if eos else 0)
                positions = torch.arange(answer_start, answer_start + e["n_answer"])
                hit = bool((predicted[row, positions - 1] == ids[positions]).all()) and e["n_answer"] > 0
                correct.append(hit)
                e["_correct"] = hit
    bar.close()

    by_distance: dict = {}
    for e in examples:
        hit = e.pop("_correct")
        if not e["fact_tokens"]:
            continue
        distance = e["question_start"] // segment_size - min(e["fact_tokens"]) // segment_size
        bucket = by_distance.setdefault(distance_buckets(distance), [0, 0])
        bucket[0] += hit
        bucket[1] += 1
    return {
        "per_segment": {
            "segment": list(range(1, n_segments + 1)),
            "rows": rows_per_segment,
            "memory_norm": sums.means("memory_norm"),
            "relative_change": sums.means("relative_change"),
            "cosine": sums.means("cosine"),
            "write_rate": sums.means("write_rate"),
            "A_norm": sums.means("A_norm"),
            "z_norm": sums.means("z_norm"),
        },
        "relative_change_by_fact": {place: round(total / n, 6) if n else None for place, (total, n) in by_place.items()},
        "accuracy": sum(correct) / len(correct),
        "accuracy_by_distance": [
            {"distance": f"{lo}" if lo == hi else f"{lo}-{hi}", "min": lo, "max": hi, "samples": n,
             "accuracy": round(c / n, 4)}
            for (lo, hi), (c, n) in sorted(by_distance.items())
        ],
    }


# --------------------------------------------------------------------- outputs
def _shown_segments(n: int) -> list[int]:
    """1, 2, 4, ... and the last segment (what the text summary lists)."""
    shown, s = [], 1
    while s <= n:
        shown.append(s)
        s *= 2
    return shown + ([n] if shown[-1] != n else [])


def _fmt(value, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def summary_text(result: dict) -> str:
    per = result["per_segment"]
    armt = per["A_norm"] is not None
    lines = [f"memory diagnostic of {result['checkpoint']}",
             f"task {result['task']}, memory {result['memory_kind']} ({result['memory_write']} writes), trained on <= "
             f"{result['train_segments']} segments of {result['segment_size']} tokens; {result['samples']} samples of "
             f"{result['segments']} segments, {result['seconds']:.0f} s",
             f"scales: mean norm of a token embedding {result['embedding_norm']:.3g}, of a learned memory token "
             f"{result['initial_memory_norm']:.3g}", ""]
    head = f"{'segment':>8} {'rows':>5} " + (f"{'||A|| per layer':>22} {'||z|| per layer':>22}" if armt else f"{'norm':>9}")
    head += f" {'rel.change':>11} {'cosine':>8}" + (f" {'write rate':>10}" if per["write_rate"] else "")
    lines.append(head)
    for s in _shown_segments(len(per["segment"])):
        i = s - 1
        row = f"{s:>8} {per['rows'][i]:>5} "
        if armt:
            row += f"{' '.join(_fmt(v, '.3g') for v in per['A_norm'][i]):>22} {' '.join(_fmt(v, '.3g') for v in per['z_norm'][i]):>22}"
        else:
            row += f"{_fmt(per['memory_norm'][i], '.4g'):>9}"
        row += f" {_fmt(per['relative_change'][i], '.3g'):>11} {_fmt(per['cosine'][i]):>8}"
        if per["write_rate"]:
            row += f" {_fmt(per['write_rate'][i], '.3g'):>10}"
        lines.append(row)
    lines.append("")
    place = result["relative_change_by_fact"]
    lines.append(f"mean relative change (segments 2..): before the fact {_fmt(place['before'], '.3g')}, in the segment that "
                 f"holds it {_fmt(place['at'], '.3g')}, after it {_fmt(place['after'], '.3g')}")
    lines.append(f"accuracy {result['accuracy']:.3f}; by distance from the supporting fact to the question (segments):")
    lines.append("  " + "  ".join(f"{b['distance']}: {b['accuracy']:.2f} (n={b['samples']})" for b in result["accuracy_by_distance"]))
    return "\n".join(lines)


def plot(result: dict, path: Path) -> Path:
    """Per-segment panels and accuracy by distance, written atomically."""
    import matplotlib  # lazy: matplotlib ~0.5 s; only the plot needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per = result["per_segment"]
    x = per["segment"]
    armt = per["A_norm"] is not None
    panels = ["norm", "change", "cosine"] + (["write"] if per["write_rate"] else []) + ["distance"]
    cols = 2
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(10, 3.2 * rows), squeeze=False)
    train = result["train_segments"]

    def series(values):
        return [math.nan if v is None else v for v in values]

    for ax, panel in zip(axes.flat, panels):
        if panel != "distance":
            ax.set_xscale("log", base=2)
            ax.axvspan(1, max(train, 1.0001), color="grey", alpha=0.15, label="training lengths")
            ax.set_xlabel("segment")
        if panel == "norm":
            if armt:
                layers = len(per["A_norm"][0])
                for layer in range(layers):
                    ax.plot(x, series([v[layer] if v else None for v in per["A_norm"]]), label=f"||A||, layer {layer}")
                    ax.plot(x, series([v[layer] if v else None for v in per["z_norm"]]), ls="--", label=f"||z||, layer {layer}")
                ax.set_title("associative memory norms")
            else:
                ax.plot(x, series(per["memory_norm"]), label="mean norm of a memory vector")
                ax.axhline(result["embedding_norm"], color="tab:orange", ls=":", label="mean token embedding norm")
                ax.axhline(result["initial_memory_norm"], color="tab:green", ls=":", label="learned initial memory")
                ax.set_title("memory norm")
            ax.legend(fontsize=7)
        elif panel == "change":
            ax.plot(x, series(per["relative_change"]))
            ax.set_yscale("symlog", linthresh=1e-4)
            ax.set_title("relative change from the previous segment")
        elif panel == "cosine":
            ax.plot(x, series(per["cosine"]))
            ax.set_title("cosine to the previous segment's memory")
        elif panel == "write":
            ax.plot(x, series(per["write_rate"]))
            ax.set_title("write rate (mean gate-open probability)")
        else:
            buckets = result["accuracy_by_distance"]
            ax.bar(range(len(buckets)), [b["accuracy"] for b in buckets])
            ax.set_xticks(range(len(buckets)), [f"{b['distance']}\nn={b['samples']}" for b in buckets], fontsize=7)
            ax.set_ylim(0, 1.02)
            ax.set_xlabel("segments from the supporting fact to the question")
            ax.set_title(f"accuracy by distance (all: {result['accuracy']:.2f})")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(f"{result['task']}, {result['memory_kind']} ({result['memory_write']} writes): {result['samples']} "
                 f"samples of {result['segments']} segments", fontsize=10)
    fig.tight_layout()
    atomic_file(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return path


# --------------------------------------------------------------------- the command
def check_arguments(segments, samples, batch_size: int = 16) -> None:
    for name, value in (("--segments", segments), ("--samples", samples), ("--batch-size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UsageError(f"{name} must be an integer >= 1, got {value!r}")


def check_replaceable(out: Path) -> None:
    """The files ``rmt diagnose`` writes into ``out`` may be replaced only when they are its own
    output (a ``diagnose.json`` it wrote): a user's file of the same name is never overwritten."""
    names = [name for name in (JSON_NAME, PNG_NAME, TEXT_NAME) if (out / name).exists()]
    if not names:
        return
    try:
        ours = {"checkpoint", "per_segment"} <= set(json.loads((out / JSON_NAME).read_text()))
    except (OSError, ValueError, TypeError):
        ours = False
    if not ours:
        raise UsageError(f"--out {out} holds {', '.join(names)} not written by rmt diagnose; choose another dir "
                         f"(nothing in it is changed)")


def diagnose(checkpoint, segments: int = 1024, samples: int = 16, out=None, batch_size: int = 16,
             threads: int | None = 1, progress: bool = True, log=print) -> dict:
    """Run the diagnostic of ``checkpoint`` and write ``diagnose.json``, ``diagnose.png`` and
    ``diagnose.txt`` into ``out`` (default: the run's ``diagnose/``). Returns the JSON's content."""
    check_arguments(segments, samples, batch_size)
    model_dir, config_file = find_checkpoint(checkpoint)

    cfg = TrainConfig.from_file(config_file)
    if cfg.task == "lm":
        raise UsageError(f"checkpoint {checkpoint} was trained on task lm; rmt diagnose needs a question-answering task "
                         f"(qa1..qa20, memorize, detect, reason)")
    out = check_output(out if out is not None else default_out(model_dir), "--out", kind="dir")
    check_replaceable(out)

    start = time.time()

    set_threads(threads)

    model = RecurrentMemoryTransformer.from_pretrained(model_dir)
    tokenizer = runs.load_tokenizer(model_dir)
    data = TaskData(cfg, tokenizer)
    log(f"diagnose: {samples} samples of {segments} segments of {cfg.task} ({cfg.rmt.memory_kind}, {model.config.memory_write} writes)")
    examples = [data.example(r, segments) for r in data.records("eval", 0, segments, samples)]
    result = {
        "checkpoint": str(model_dir), "task": cfg.task, "memory_kind": model.config.memory_kind,
        "memory_write": model.config.memory_write, "segment_size": model.config.segment_size,
        "train_segments": cfg.max_segments, "segments": segments, "samples": samples,
        # Scales to read the memory norm against: what a token and the learned memory tokens look like.
        "embedding_norm": round(float(model.base_model.get_input_embeddings().weight.detach().double().norm(dim=-1).mean()), 6),
        "initial_memory_norm": round(float(model.memory.detach().double().norm(dim=-1).mean()), 6),
    }
    result.update(trace(model, examples, model.config.segment_size, batch_size, progress, eos=data.eos_id is not None))
    result["seconds"] = round(time.time() - start, 1)

    out.mkdir(parents=True, exist_ok=True)
    text = summary_text(result)
    atomic_file(out / JSON_NAME, lambda tmp: Path(tmp).write_text(json.dumps(result, indent=1) + "\n"))
    atomic_file(out / TEXT_NAME, lambda tmp: Path(tmp).write_text(text + "\n"))
    plot(result, out / PNG_NAME)
    result["files"] = {"json": str(out / JSON_NAME), "png": str(out / PNG_NAME), "text": str(out / TEXT_NAME)}
    return result
