"""The lm-evaluation-harness (``lm_eval``) side of BABILong, both ways.

* :func:`write_lm_eval_tasks`: task files that make ``lm_eval --include_path DIR --tasks ...``
  evaluate any model on *our* data (a folder in the public layout, ``rmt.babilong.layout``), at any
  length. Each task file ``include``s lm-eval's own installed ``babilong_qaN.yaml`` (its prompt,
  few-shot examples, generation settings and ``process_results`` scoring) and only points the
  dataset at our folder: ``load_dataset(FOLDER, name=LENGTH, split=TASK)``.
* :func:`lm_eval_prompts`: lm-eval's babilong instruction and few-shot examples, read at run time
  from the installed task files, as a prompt dict for ``rmt.babilong.prompts`` (so ``rmt eval
  --prompts lm-eval`` asks what the leaderboard's harness asks). Nothing of lm-eval's is copied into
  this package: without lm-eval installed these functions raise one clear error.
"""

from __future__ import annotations

import importlib.util
import os
from functools import lru_cache
from pathlib import Path

import yaml

from rmt.atomic import atomic_file
from rmt.babilong.layout import _length_key, _task_key, layout_cells
from rmt.babilong.tasks import TASKS, check_task
from rmt.errors import UsageError
from rmt.outputs import check_output

INSTALL_HINT = "pip install 'rmt[lm-eval]'"
TASK_PREFIX = "rmt_babilong"
# First line of every task file written here: how a rerun knows a file of that name is its own.
HEADER = "# written by rmt generate --lm-eval-tasks; lm-eval's own babilong task, on rmt's data\n"


def lm_eval_babilong_dir() -> Path:
    """The installed lm-eval's ``tasks/babilong`` folder (found without importing lm-eval)."""
    spec = importlib.util.find_spec("lm_eval")
    if spec is None or not spec.submodule_search_locations:
        raise UsageError(f"lm-eval is not installed; it is needed for its babilong task files ({INSTALL_HINT})")
    folder = Path(list(spec.submodule_search_locations)[0]) / "tasks" / "babilong"
    if not folder.is_dir():
        raise UsageError(f"the installed lm-eval ({folder.parent.parent}) has no babilong tasks; {INSTALL_HINT}")
    return folder


def lm_eval_task_file(task: str) -> Path:
    task = check_task(task)
    path = lm_eval_babilong_dir() / f"babilong_{task}.yaml"
    if not path.is_file():
        raise UsageError(f"the installed lm-eval has no babilong task file for {task} ({path})")
    return path


def _read_task_yaml(path: Path, _seen: tuple = ()) -> dict:
    """A task YAML as lm-eval reads it: ``include``d files first, the file's own keys win; its
    ``!function`` tags are kept as plain strings (nothing is imported)."""
    if path in _seen:
        raise UsageError(f"include cycle at {path}")
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!function", lambda loader, node: f"!function {loader.construct_scalar(node)}")
    data = yaml.load(path.read_text(encoding="utf-8"), Loader=Loader)  # noqa: S506 (SafeLoader subclass)
    if not isinstance(data, dict):
        raise UsageError(f"{path} is not an lm-eval task file (expected a mapping)")
    includes = data.pop("include", None)
    merged: dict = {}
    for name in [includes] if isinstance(includes, str) else list(includes or []):
        merged.update(_read_task_yaml(path.parent / name, (*_seen, path)))
    return {**merged, **data}


def _render_doc(template: str, doc: dict) -> str:
    import jinja2  # lazy: only the lm-eval export renders templates

    return jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(template).render(**doc)


@lru_cache(maxsize=None)
def lm_eval_prompt_parts(task: str) -> dict:
    """lm-eval's babilong prompt of ``task``: its ``description`` as the instruction (it holds the
    answer-format line too, so the post-prompt is empty) and its ``fewshot_config`` samples, rendered
    with its ``doc_to_text``, as ``<example>`` blocks."""
    path = lm_eval_task_file(task)
    config = _read_task_yaml(path)
    description = str(config.get("description") or "").strip()
    doc_to_text = config.get("doc_to_text") or "{{input.strip()}}\n{{question.strip()}}"
    samples = (config.get("fewshot_config") or {}).get("samples") or []
    n = int(config["num_fewshot"] or 0) if "num_fewshot" in config else len(samples)
    blocks = [f"<example>\n{_render_doc(doc_to_text, s)}\nAnswer: {s['target']}\n</example>" for s in samples[:n]]
    if not description:
        raise UsageError(f"{path} has no description; cannot build the lm-eval prompt of {task}")
    return {"instruction": description, "examples": "\n".join(blocks), "post_prompt": ""}


LM_EVAL_DOC_TO_TEXT = "{{input.strip()}}\n{{question.strip()}}"
LM_EVAL_HARNESS_TEMPLATE = "{instruction}\n\n{examples}\n\n{context}\n{question}"


@lru_cache(maxsize=None)
def lm_eval_harness_parts(task: str) -> dict:
    """lm-eval's babilong prompt of ``task`` laid out as lm-eval itself builds it for a generation
    request (no tags, no "Question:"): the description, then each few-shot sample as ``doc_to_text``,
    the target delimiter and its target, joined by the few-shot delimiter, then the document's
    ``doc_to_text`` (:data:`LM_EVAL_HARNESS_TEMPLATE`): the very text lm-eval sends to a completions
    endpoint, so ``rmt eval --prompts lm-eval-harness`` answers as lm-eval against ``rmt serve``."""
    path = lm_eval_task_file(task)
    config = _read_task_yaml(path)
    description = str(config.get("description") or "").strip()
    doc_to_text = config.get("doc_to_text") or LM_EVAL_DOC_TO_TEXT
    if doc_to_text != LM_EVAL_DOC_TO_TEXT:
        raise UsageError(f"{path}: doc_to_text is {doc_to_text!r}, not the {LM_EVAL_DOC_TO_TEXT!r} that "
                         f"--prompts lm-eval-harness lays out; use --prompts lm-eval")
    if not description:
        raise UsageError(f"{path} has no description; cannot build the lm-eval prompt of {task}")
    samples = (config.get("fewshot_config") or {}).get("samples") or []
    n = int(config["num_fewshot"] or 0) if "num_fewshot" in config else len(samples)
    target_delimiter = config.get("target_delimiter", " ")
    fewshot_delimiter = config.get("fewshot_delimiter", "\n\n")
    if fewshot_delimiter != "\n\n":
        raise UsageError(f"{path}: fewshot_delimiter {fewshot_delimiter!r} is not the blank line that "
                         f"--prompts lm-eval-harness lays out; use --prompts lm-eval")
    examples = fewshot_delimiter.join(f"{_render_doc(doc_to_text, s)}{target_delimiter}{s['target']}" for s in samples[:n])
    return {"instruction": description, "examples": examples, "post_prompt": ""}


def lm_eval_harness_prompts() -> dict:
    """The ``lm-eval-harness`` prompt set: :func:`lm_eval_harness_parts` for every task and lm-eval's
    layout as the template (records' input and question are taken stripped, as its doc_to_text does)."""
    return {"template": LM_EVAL_HARNESS_TEMPLATE, "strip_record": True,
            **{task: lm_eval_harness_parts(task) for task in TASKS}}


def lm_eval_prompts() -> dict:
    """Prompt overrides for every task (``rmt.babilong.prompts`` prompt-dict shape)."""
    return {task: lm_eval_prompt_parts(task) for task in TASKS}


# ------------------------------------------------------------------------------------ export
def task_name(task: str, length: str) -> str:
    return f"{TASK_PREFIX}_{task}_{length}"


def check_lm_eval_tasks_dir(out_dir: str | os.PathLike, data: str | os.PathLike | None = None,
                            overwrite: bool = False, flag: str = "--lm-eval-tasks") -> Path:
    """The output rule (``rmt.outputs``) for a task-file dir, plus: it is not the data folder or
    inside it (the layout folder holds only what its card lists), and a ``rmt_babilong*.yaml`` file
    already there that rmt did not write is kept unless ``overwrite``. Creates nothing."""
    out = check_output(out_dir, flag, kind="dir")
    if data is not None:
        data_full, out_full = Path(os.path.abspath(Path(data).expanduser())), Path(os.path.abspath(out))
        if out_full == data_full or data_full in out_full.parents:
            raise UsageError(f"{flag} {out_dir} is inside the dataset folder {data}; give a directory beside it")
    if out.is_dir() and not overwrite:
        for file in sorted(out.glob(f"{TASK_PREFIX}*.yaml")):
            try:
                with open(file, encoding="utf-8") as f:
                    ours = f.readline() == HEADER
            except (OSError, UnicodeDecodeError):
                ours = False
            if not ours:
                raise UsageError(f"{flag} {out_dir} holds {file.name}, which rmt did not write (nothing is "
                                 "replaced); choose another directory, or pass --overwrite to replace it")
    return out


def write_lm_eval_tasks(data: str | os.PathLike, out_dir: str | os.PathLike, overwrite: bool = False) -> list[str]:
    """Write lm-eval task files for every (length, task) of the public-layout folder ``data`` into
    ``out_dir`` (``check_lm_eval_tasks_dir``: task files of the user's are not replaced unless
    ``overwrite``); return the names to pass to ``--tasks``: the group of everything first
    (``rmt_babilong``), then one group per length (``rmt_babilong_4k``), then the single tasks
    (``rmt_babilong_qa1_4k``)."""
    data = Path(data).expanduser().resolve()
    cells = layout_cells(data)
    if not cells:
        raise UsageError(f"{data} is not a dataset in the public layout (write it with rmt generate --out DIR)")
    out = check_lm_eval_tasks_dir(out_dir, data, overwrite, flag="lm-eval task dir")
    out.mkdir(parents=True, exist_ok=True)
    lengths = sorted(cells, key=_length_key)
    singles, groups = [], []

    def dump(name: str, config: dict) -> None:
        text = HEADER + yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
        atomic_file(out / f"{name}.yaml", lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))

    for length in lengths:
        names = []
        for task in sorted(cells[length], key=_task_key):
            name = task_name(task, length)
            dump(name, {
                "include": str(lm_eval_task_file(task)),  # prompt, few-shot, generation, scoring: lm-eval's
                "task": name,
                "custom_dataset": None,  # lm-eval's loader reads the Hub; ours is a local folder
                "dataset_path": str(data),
                "dataset_name": length,
                "dataset_kwargs": {},
                "test_split": task,
            })
            names.append(name)
        group = f"{TASK_PREFIX}_{length}"
        dump(group, {"group": group, "task": names,
                     "aggregate_metric_list": [{"metric": "acc", "weight_by_size": True}],
                     "metadata": {"version": 0.0}})
        groups.append(group)
        singles.extend(names)
    dump(TASK_PREFIX, {"group": TASK_PREFIX, "task": groups,
                       "aggregate_metric_list": [{"metric": "acc", "weight_by_size": True}],
                       "metadata": {"version": 0.0}})
    return [TASK_PREFIX, *groups, *singles]
