"""`rmt train` and `rmt quickstart`.

`rmt train` has one flag per setting of ``rmt.training.config.TrainConfig``: its own fields and the
memory settings of its ``RMTConfig`` (every memory kind's options, torch-free from
``rmt.memory.kind_options``; built from them, so flags and
config files can never drift apart): ``--config FILE`` (YAML/JSON) sets any of them, flags given on
the command line win over the file.

Lazy imports: the rooms that import torch and transformers (the trainer, the quickstart) are
imported inside the command functions, so `rmt --help` imports neither (see rmt/cli/__init__.py);
the training settings (torch-free; `rmt --help` reads them for the flags) at the top.
"""

from __future__ import annotations

import inspect
import json
import os
import typing
from dataclasses import MISSING
from pathlib import Path

import typer

from rmt import runs
from rmt.cli.options import parse_n_facts
from rmt.errors import UsageError
from rmt.training.config import TrainConfig, memory_options, training_fields

# One line per flag of a training field (the dataclass docstring has the long story; a test checks
# every field has one). The memory settings' lines are their Options' (rmt/memory/kinds/).
HELP = {
    "task": "qa1..qa20 (BABILong), memorize, detect, reason (2304.11062), or lm.",
    "n_facts": "Facts per story, N or LO,HI (BABILong tasks). Default: the generator's range per task.",
    "warmup_facts": "Facts per story, N or LO,HI, of the first --warmup-facts-steps training steps (short stories "
                    "first: multi-hop tasks such as qa2 learn from them; evaluation keeps --n-facts).",
    "warmup_facts_steps": "Training steps with --warmup-facts stories.",
    "background": "Books dir for background text, or 'none': the QA tasks' inputs are the facts alone (as at 0k; "
                  "not for --task lm). Default: built-in fallback text.",
    "model": "Base model: HF hub name or local path, or an RMT checkpoint to continue. Default: a small model built from scratch (--arch).",
    "tokenizer": "HF tokenizer name or path. Default: a word-level tokenizer trained locally.",
    "vocab_size": "Most words of the locally trained tokenizer.",
    "arch": "Architecture of a from-scratch base model: gpt2 (learned positions) or llama (rotary).",
    "n_layer": "Layers of a from-scratch base model.",
    "n_embd": "Hidden size of a from-scratch base model.",
    "n_head": "Attention heads of a from-scratch base model.",
    "memory": "--no-memory trains the bare base model on whole inputs (the baseline).",
    "curriculum": "Segments per stage, non-decreasing, e.g. 1,2,4.",
    "stage_steps": "Optimizer steps per curriculum stage (at most).",
    "stage_threshold": "Move to the next stage once validation accuracy reaches this (0..1).",
    "vary_n_segments": "Each batch draws its number of segments from 1..stage segments.",
    "batch_size": "Samples per optimizer step (split across processes).",
    "lr": "Peak learning rate (AdamW).",
    "memory_lr": "Peak learning rate of the parameters the memory adds (memory tokens, write gate, ARMT's "
                 "projections), when it should differ from --lr (e.g. fine-tuning a pretrained model). Default: --lr.",
    "weight_decay": "AdamW weight decay.",
    "scheduler": "Learning-rate schedule: constant, linear or cosine.",
    "warmup_steps": "Linear warm-up steps.",
    "grad_clip": "Clip the gradient norm to this (0: no clipping).",
    "lora_rank": "LoRA adapters of this rank on a frozen pretrained --model (peft); only they and the memory's "
                 "parameters train, and a run holds only them (a few MB). 0: fine-tune every weight.",
    "lora_alpha": "LoRA scale numerator (scale = alpha / rank).",
    "lora_dropout": "Dropout on the LoRA adapters' input (the RMT team's BABILong models: 0.1; costs ~1.5x the step time on CPU).",
    "lora_targets": "Comma-separated module names that get adapters, e.g. q_proj,v_proj. Default: every linear "
                    "layer of the decoder blocks.",
    "grad_accum": "Micro-batches per optimizer step: an effective batch of --batch-size x N, N micro-batches of --batch-size.",
    "save_every_minutes": "Also save a checkpoint whenever this many minutes of wall time have passed since the last one.",
    "seed": "Seed of data, model init and order: same seed, same run.",
    "output_dir": "Where checkpoints, metrics and the final model go.",
    "save_every": "Save a checkpoint every N steps.",
    "eval_every": "Evaluate every N steps.",
    "eval_samples": "Validation samples per evaluation.",
    "eval_batch_size": "Batch size of validation.",
    "log_every": "Log training metrics every N steps.",
    "tensorboard": "Also log to OUT/tensorboard (needs the tensorboard package).",
    "mixed_precision": "auto, no, fp16 or bf16 (accelerate's mixed precision; bf16 also on CPU). auto: bf16 for a "
                       "pretrained --model where bf16 is native (CUDA with bf16, a CPU with AVX512-BF16/AMX), else no.",
    "gradient_checkpointing": "Recompute each layer's activations in the backward pass (less memory, ~1 more forward of time; same gradients).",
    "threads": "torch CPU threads. Default: one per core not already busy.",
    "progress": "Show a progress bar.",
}


def _flag_type(annotation):
    """(click-friendly type, parser) for a dataclass field annotation (strings under `from __future__`)."""
    text = str(annotation)
    if "list" in text:
        return str, _int_list
    if "bool" in text:
        return bool, None
    if "float" in text:
        return float, None
    if "int" in text:
        return int, None
    return str, None


def _int_list(value: str):
    """``"1,2,4"`` -> [1, 2, 4]."""
    return [int(x) for x in value.split(",")] if value else None


def _n_facts(value: str):
    """``--n-facts`` as in ``rmt generate``: ``6`` or ``LO,HI`` (or the old ``LO-HI``)."""
    parsed = parse_n_facts(value)
    return None if parsed is None else [parsed, parsed] if isinstance(parsed, int) else list(parsed)


def _settings(entries):
    """Typer parameters (and value parsers) of ``entries``: (name, type annotation, default, help)."""
    params, parsers = [], {}
    for name, annotation, default, help_text in entries:
        kind, parser = _flag_type(annotation)
        flag = "--" + name.replace("_", "-")
        decl = [f"{flag}/--no-{name.replace('_', '-')}"] if kind is bool else [flag]
        if default is not None and "Default:" not in help_text:  # the value is None until given: say the default once
            shown = ",".join(map(str, default)) if isinstance(default, list) else default
            if kind is bool:
                shown = decl[0].split("/")[0 if default else 1]
            help_text += f" Default: {shown}."
        option = typer.Option(None, *decl, help=help_text, show_default=False)
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option,
                                        annotation=typing.Optional[kind]))
        if parser:
            parsers[name] = _n_facts if name in ("n_facts", "warmup_facts") else parser
    return params, parsers


def _config_flags():
    """The flags of TrainConfig's own fields (the memory settings' come from ``_memory_flags``)."""
    entries = []
    for f in training_fields():
        default = f.default if f.default is not MISSING else f.default_factory()
        entries.append((f.name, f.type, default, HELP[f.name]))  # KeyError here: a field without a help line
    return _settings(entries)


def _memory_flags():
    """The flags of the memory settings (``rmt.training.config.memory_options``: RMTConfig's, every
    memory kind's included; torch-free, from ``rmt.memory.kind_options``)."""
    return _settings([(o.name, o.type.__name__, o.default, o.help) for o in memory_options()])


def _parent_num_processes() -> int | None:
    """``--num_processes N`` from the command line of the process that started this one (Linux)."""
    try:
        with open(f"/proc/{os.getppid()}/cmdline", "rb") as f:
            argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return None
    if not any("accelerate" in a for a in argv[:3]):
        return None
    for i, arg in enumerate(argv):
        for flag in ("--num_processes", "--num-processes"):
            value = argv[i + 1] if arg == flag and i + 1 < len(argv) else arg[len(flag) + 1:] if arg.startswith(flag + "=") else None
            if value is not None and value.isdigit():
                return int(value)
    return None


def check_launch(command: str = "train") -> None:
    """``accelerate launch --num_processes N`` on a machine without GPUs and without ``--multi_gpu``
    (or a config saying MULTI_CPU) runs its single-process launcher: one process, silently. Say so."""
    if "WORLD_SIZE" in os.environ or "ACCELERATE_MIXED_PRECISION" not in os.environ:
        return  # torchrun / a multi-process accelerate launch, or not launched by accelerate at all
    asked = _parent_num_processes()
    if asked and asked > 1:
        raise UsageError(f"accelerate launch --num_processes {asked} started 1 process (without --multi_gpu, accelerate "
                         f"runs one process on a machine without GPUs); add --multi_gpu (it then starts {asked} CPU "
                         f"processes with gloo) or run torchrun --nproc_per_node {asked} -m rmt {command} ...")


def build_config(config_file, values: dict, parsers: dict):
    """Defaults < config file < flags given on the command line."""
    data = TrainConfig.from_file(config_file).to_dict() if config_file else {}
    for name, value in values.items():
        if value is None:
            continue
        if name in parsers:
            try:
                value = parsers[name](value)
            except ValueError:
                raise UsageError(f"--{name.replace('_', '-')} must be comma-separated integers, got {value!r}") from None
        data[name] = value
    return TrainConfig.from_dict(data)


def register(app):
    params, parsers = _config_flags()
    memory_params, memory_parsers = _memory_flags()
    at = next((i + 1 for i, p in enumerate(params) if p.name == "memory"), len(params))
    params = params[:at] + memory_params + params[at:]  # the memory settings after --memory/--no-memory
    parsers = {**parsers, **memory_parsers}

    def train(config: typing.Optional[str] = typer.Option(None, "--config", help="YAML/JSON file with any of the flags below."),
              resume: bool = typer.Option(False, "--resume", help="Continue the run in --output-dir from its newest checkpoint."),
              **values):
        """Train RMT (or the no-memory baseline) with a curriculum. Runs on CPU/GPU; for several
        GPUs or nodes start it with `accelerate launch` (DDP, DeepSpeed, FSDP configs)."""
        from rmt.training.trainer import Trainer  # lazy: torch and transformers, not for --help

        check_launch()
        if resume and config is None and values.get("output_dir"):
            # --resume continues the run with its own settings: the flags given here change only what
            # they name (and the trainer refuses a change that would make another run)
            saved = Path(values["output_dir"]) / runs.TRAIN_CONFIG_FILE
            config = str(saved) if saved.is_file() else None
        cfg = build_config(config, values, parsers)
        if cfg.model:
            print(f"loading model {cfg.model} ...", flush=True)  # seconds of silence otherwise
        trainer = Trainer(cfg, resume=resume)
        summary = trainer.train()
        if not trainer.accelerator.is_main_process:
            return  # under torchrun / accelerate every process trains; one reports
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
        output_dir: str = typer.Option(None, "--output-dir", help="Where to write. Default: runs/quickstart/<time>."),
        steps: int = typer.Option(None, "--steps", help="Steps per curriculum stage. Default: the tuned preset."),
        eval_samples: int = typer.Option(100, "--eval-samples", help="Samples per evaluated length."),
        max_eval_segments: typing.Optional[int] = typer.Option(None, "--max-eval-segments", help="Evaluate at 1, 2, 4, ... up to this many segments (at most 1024). Default: 256; with --base, 16x the training length (32)."),
        base: typing.Optional[str] = typer.Option(None, "--base", help="A pretrained causal LM (e.g. smollm2-135m, fetched and converted on first use) fine-tuned with memory on multi-fact qa1 in background text, instead of the small from-scratch model on fact detection."),
        threads: int = typer.Option(1, "--threads", help="torch CPU threads (the small model gains little from more; on a busy machine more threads can be much slower)."),
        seed: int = typer.Option(0, "--seed", help="Seed of data and models: same seed, same result."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    ):
        """Train RMT on fact detection (one qa1 fact in background text) on <= 4 segments, then show
        accuracy up to 256 segments next to a same-size model without memory. CPU, offline, minutes."""
        from rmt.training.quickstart import run_quickstart  # lazy: torch and transformers, not for --help

        result = run_quickstart(output_dir=output_dir, steps=steps, eval_samples=eval_samples,
                                max_eval_segments=max_eval_segments, threads=threads, seed=seed, progress=progress,
                                base=base)
        print(json.dumps(result))
