"""`rmt train` and `rmt quickstart`.

`rmt train` has one flag per field of ``rmt.training.config.TrainConfig`` (built from the dataclass,
so flags and config files can never drift apart): ``--config FILE`` (YAML/JSON) sets any of them,
flags given on the command line win over the file.
"""

from __future__ import annotations

import inspect
import typing
from dataclasses import MISSING, fields

import typer

# Help text per flag (the dataclass docstring has the long story).
HELP = {
    "task": "qa1..qa20 (BABILong), memorize, detect, reason (2304.11062), or lm.",
    "n_facts": "Facts per story as LO,HI (BABILong tasks).",
    "background": "Books dir for background text (default: built-in fallback text).",
    "model": "Base model: HF hub name or local path (default: small GPT-2 from scratch).",
    "tokenizer": "HF tokenizer name/path (default: word-level tokenizer trained locally).",
    "memory": "--no-memory trains the bare base model on whole inputs (the baseline).",
    "memory_kind": "rmt, rmt-r (same as --self-retrieval) or armt (docs/memory.md).",
    "curriculum": "Segments per stage, non-decreasing, e.g. 1,2,4.",
    "stage_steps": "Steps per curriculum stage (at most).",
    "stage_threshold": "Move to the next stage once validation accuracy reaches this (0..1).",
    "vary_n_segments": "Each batch draws 1..stage segments.",
    "threads": "torch CPU threads.",
    "tensorboard": "Also log to OUT/tensorboard (needs the tensorboard package).",
}


def _flag_type(annotation):
    """(click-friendly type, parser) for a dataclass field annotation (strings under `from __future__`)."""
    text = str(annotation)
    if "list" in text:
        return str, lambda v: [int(x) for x in v.split(",")] if v else None
    if "bool" in text:
        return bool, None
    if "float" in text:
        return float, None
    if "int" in text:
        return int, None
    return str, None


def _config_flags():
    from rmt.training.config import TrainConfig

    params, parsers = [], {}
    for f in fields(TrainConfig):
        kind, parser = _flag_type(f.type)
        flag = "--" + f.name.replace("_", "-")
        decl = [f"{flag}/--no-{f.name.replace('_', '-')}"] if kind is bool else [flag]
        default = f.default if f.default is not MISSING else f.default_factory()
        help_text = HELP.get(f.name, "") + f" (default: {default})"
        option = typer.Option(None, *decl, help=help_text.strip(), show_default=False)
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option,
                                        annotation=typing.Optional[kind]))
        if parser:
            parsers[f.name] = parser
    return params, parsers


def build_config(config_file, values: dict, parsers: dict):
    """Defaults < config file < flags given on the command line."""
    from rmt.training.config import TrainConfig

    data = TrainConfig.from_file(config_file).to_dict() if config_file else {}
    for name, value in values.items():
        if value is None:
            continue
        if name in parsers:
            try:
                value = parsers[name](value)
            except ValueError:
                raise ValueError(f"--{name.replace('_', '-')} must be comma-separated integers, got {value!r}") from None
        data[name] = value
    return TrainConfig.from_dict(data)


def register(app):
    params, parsers = _config_flags()

    def train(config: typing.Optional[str] = typer.Option(None, "--config", help="YAML/JSON file with any of the flags below."),
              resume: bool = typer.Option(False, "--resume", help="Continue the run in --output-dir from its newest checkpoint."),
              **values):
        """Train RMT (or the no-memory baseline) with a curriculum. Runs on CPU/GPU; for several
        GPUs or nodes start it with `accelerate launch` (DDP, DeepSpeed, FSDP configs)."""
        import json

        from rmt.training.trainer import Trainer

        cfg = build_config(config, values, parsers)
        summary = Trainer(cfg, resume=resume).train()
        last = summary["history"][-1] if summary["history"] else {}
        print(f"output: {cfg.output_dir} (final model: {summary['final']})")
        print(json.dumps({"step": summary["step"], "finished": summary["finished"], "final": summary["final"],
                          "last_eval": last}))

    sig = inspect.signature(train)
    base = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    train.__signature__ = sig.replace(parameters=base + params)
    app.command("train")(train)

    @app.command("quickstart")
    def quickstart(
        output_dir: str = typer.Option(None, "--output-dir", help="Where to write (default: runs/quickstart/<time>)."),
        steps: int = typer.Option(None, "--steps", help="Steps per curriculum stage (default: tuned preset)."),
        eval_samples: int = typer.Option(100, "--eval-samples", help="Samples per evaluated length."),
        max_eval_segments: int = typer.Option(64, "--max-eval-segments", help="Evaluate at 1, 2, 4, ... up to this many segments."),
        threads: int = typer.Option(1, "--threads", help="torch CPU threads (the small model gains little from more; on a busy machine more threads can be much slower)."),
        seed: int = typer.Option(0, "--seed"),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    ):
        """Train RMT on qa1 with a curriculum on <= 4 segments, then show accuracy up to 64 segments
        next to a same-size model without memory. CPU, offline, a few minutes."""
        import json

        from rmt.training.quickstart import run_quickstart

        result = run_quickstart(output_dir=output_dir, steps=steps, eval_samples=eval_samples,
                                max_eval_segments=max_eval_segments, threads=threads, seed=seed, progress=progress)
        print(json.dumps(result))
