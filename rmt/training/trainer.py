"""The training loop (nanoGPT-like, on ``accelerate``): curriculum stages, periodic evaluation,
atomic checkpoints, exact resume, JSONL metrics.

The same code runs on CPU, one GPU, or many (``accelerate launch`` with a DDP, DeepSpeed or FSDP
config): every process builds the same global batch for a step and trains on its own rows.

The loop's parts: ``build`` (tokenizer and model), ``steps`` (a step's forward pass, evaluation),
``optim`` (parameter groups, schedule, mixed precision), ``metrics`` (the JSONL log).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from rmt import runs
from rmt.atomic import atomic_dir, atomic_file
from rmt.errors import UsageError
from rmt.outputs import check_output
from rmt.runs import METRICS_FILE as METRICS_NAME, TRAIN_CONFIG_FILE as CONFIG_NAME  # the names it had here
from rmt.threads import set_threads
from rmt.training import checkpoint as ckpt
from rmt.training.config import TrainConfig
from rmt.training.curriculum import Curriculum
from rmt.training.tasks import TaskData
# The loop's parts, each in its module; also importable from here, as before the split (bench/,
# results/ scripts and tests import build_tokenizer, evaluate, forward, ... from rmt.training.trainer).
from rmt.training.build import (build_base_model, build_model, build_tokenizer, enable_gradient_checkpointing,  # noqa: F401
                                model_window, segment_window, window_of)
from rmt.training.metrics import MetricsLog
from rmt.training.optim import _forget_other_precision, make_scheduler, native_bf16, param_groups, resolve_mixed_precision  # noqa: F401
from rmt.training.steps import StepOutput, evaluate, forward, labelled_logits, last_window  # noqa: F401


# --------------------------------------------------------------------- building blocks
def check_output_dir(path, flag: str = "--output-dir") -> Path:
    """The output rule (``rmt.outputs``) for a run directory, then create it."""
    path = check_output(path, flag, kind="dir")
    path.mkdir(parents=True, exist_ok=True)
    return path


# --------------------------------------------------------------------- the loop
class Trainer:
    """``Trainer(cfg, resume=False).train()``; see ``docs/training.md``."""

    def __init__(self, cfg: TrainConfig, resume: bool = False, accelerator=None, tokenizer=None):
        self.cfg = cfg
        self.threads = set_threads(cfg.threads)  # None: one per core not already busy (rmt.threads)
        # Launched as several processes (torchrun / accelerate launch) on a machine without CUDA:
        # tell accelerate to run data-parallel on CPU (gloo); it only does so when asked.
        cpu_ddp = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
        if accelerator is not None:  # the caller's accelerator decides
            cfg.mixed_precision = accelerator.mixed_precision
        else:
            cfg.mixed_precision, why = resolve_mixed_precision(cfg, torch.cuda.is_available())
            _forget_other_precision(cfg.mixed_precision)
        self.accelerator = accelerator or Accelerator(mixed_precision=cfg.mixed_precision, cpu=cpu_ddp)
        self.out = Path(cfg.output_dir)
        # Read-only checks first (every process, same answer): a run that cannot start leaves
        # nothing behind. The output dir is created once the model is built.
        self.resume_from = self._check_output_dir(resume)

        torch.manual_seed(cfg.seed)
        if self.resume_from is not None:
            self.tokenizer = runs.load_tokenizer(self.resume_from)
        else:
            self.tokenizer = tokenizer if tokenizer is not None else build_tokenizer(cfg)
        self.data = TaskData(cfg, self.tokenizer)
        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg, self.tokenizer)
        if cfg.gradient_checkpointing:
            enable_gradient_checkpointing(self.model)
        self.window = model_window(self.model)
        self.optimizer = torch.optim.AdamW(param_groups(self.model, cfg.weight_decay, cfg.memory_lr), lr=cfg.lr)
        # The scheduler is stepped by hand once per optimizer step (accelerate's wrapper would step
        # it once per process), so the learning rate does not depend on the number of processes.
        self.scheduler = make_scheduler(self.optimizer, cfg)
        self.curriculum = Curriculum(cfg.curriculum, cfg.stage_steps, cfg.stage_threshold, cfg.vary_n_segments, cfg.seed)
        self.step = 0
        self._last_save = time.monotonic()
        self.history: list[dict] = []
        if self.resume_from is not None:
            state = ckpt.load_checkpoint(self.resume_from, self.model, self.optimizer, self.scheduler)
            self.step = state["step"]
            self.curriculum.load_state_dict(state["curriculum"])
            self.history = state.get("history", [])
        self.model, self.optimizer = self.accelerator.prepare(self.model, self.optimizer)
        if self.accelerator.is_main_process:
            self._create_output_dir()
            if accelerator is None and why != "asked" and cfg.model is not None:  # said once the run starts
                print(f"mixed precision: {'bf16 autocast' if cfg.mixed_precision == 'bf16' else 'fp32'} ({why}; "
                      f"--mixed-precision no|bf16 to choose)", file=sys.stderr)
        self.accelerator.wait_for_everyone()
        self.metrics = MetricsLog(self.out / METRICS_NAME, self.accelerator.is_main_process,
                                  self.out / runs.TENSORBOARD_DIR if cfg.tensorboard else None)
        if self.resume_from is not None:
            self.metrics.truncate_after(self.step)

    def _check_output_dir(self, resume: bool) -> Path | None:
        """Check the output dir without writing to it; return the checkpoint to resume from."""
        check_output(self.out, "--output-dir", kind="dir")
        main = self.accelerator.is_main_process
        if resume:
            existing = ckpt.resumable_checkpoint(self.out, log=(lambda line: print(line, file=sys.stderr)) if main else None)
            if existing is None:
                raise UsageError(f"--resume: no checkpoint in {self.out / runs.CHECKPOINTS_DIR}; start without --resume")
            other = TrainConfig.from_file(existing / CONFIG_NAME)
            diff = self.cfg.resume_mismatch(other)
            if diff:
                theirs, mine = other.settings(), self.cfg.settings()
                shown = ", ".join(f"{k}={theirs.get(k)!r} (now {mine.get(k)!r})" for k in diff)
                raise UsageError(f"--resume: {self.out} holds a run with another config: {shown}; "
                                 f"use the same settings or another output dir")
            return existing
        if ckpt.latest_checkpoint(self.out) is not None or (self.out / METRICS_NAME).exists():
            raise UsageError(f"output dir {str(self.out)!r} already holds a run; pass --resume to continue it "
                                  f"or choose another output dir (nothing is overwritten)")
        return None

    def _create_output_dir(self) -> None:
        check_output_dir(self.out)
        ckpt.sweep_temp_dirs(self.out)
        atomic_file(self.out / CONFIG_NAME, self.cfg.save)

    # ------------------------------------------------------------------ helpers
    def _local_rows(self, batch: dict) -> dict:
        """This process's share of the global batch (contiguous rows)."""
        n, world, rank = batch["input_ids"].shape[0], self.accelerator.num_processes, self.accelerator.process_index
        if n % world:
            raise UsageError(f"batch_size={n} must be divisible by the number of processes ({world})")
        per = n // world
        return {k: v[rank * per : (rank + 1) * per].to(self.accelerator.device) for k, v in batch.items()}

    def _state(self) -> dict:
        return {"step": self.step, "curriculum": self.curriculum.state_dict(), "history": self.history}

    def _accumulate(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Forward and backward over ``batch`` in ``grad_accum`` micro-batches, leaving the
        gradient of the whole batch: each micro-batch's loss (a mean over its answer tokens) is
        weighted by its share of the batch's answer tokens, so the sum is the batch's mean.
        Returns the batch's loss and gated writes' write rate (None without them), detached."""
        cfg, acc = self.cfg, self.accelerator
        n = batch["input_ids"].shape[0]
        size = -(-n // cfg.grad_accum)
        pieces = [{k: v[i : i + size] for k, v in batch.items()} for i in range(0, n, size)]
        counts = [int((piece["labels"][:, 1:] != -100).sum()) for piece in pieces]
        total = sum(counts)
        loss_sum, rate_sum = torch.zeros((), device=acc.device), None
        for piece, count in zip(pieces, counts):
            weight = count / total if total else 1 / len(pieces)
            out = forward(self.model, piece, self.window, cfg.memory)
            acc.backward(out.loss * weight)
            loss_sum += out.loss.detach().float() * weight
            if out.write_rate is not None:  # gated writes: how much memory this step rewrote
                rate = out.write_rate.detach().float() * weight
                rate_sum = rate if rate_sum is None else rate_sum + rate
        return loss_sum, rate_sum

    def _save_due(self) -> bool:
        """Whether ``save_every_minutes`` of wall time have passed since the last checkpoint (every
        process decides as the main one does, so all of them save together)."""
        if self.cfg.save_every_minutes is None:
            return False
        due = time.monotonic() - self._last_save >= 60 * self.cfg.save_every_minutes
        if self.accelerator.num_processes > 1:
            due = bool(self.accelerator.reduce(torch.tensor(float(due), device=self.accelerator.device), reduction="sum") > 0)
        return due

    def save(self) -> Path | None:
        self._last_save = time.monotonic()
        path = None
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            path = ckpt.save_checkpoint(self.out, self.step, self.accelerator.unwrap_model(self.model), self.tokenizer,
                                        self.optimizer, self.scheduler, self._state(), self.cfg)
        self.accelerator.wait_for_everyone()
        return path

    def evaluate(self, segments: int, samples: int | None = None) -> dict | None:
        return evaluate(self.accelerator.unwrap_model(self.model), self.data, segments, samples or self.cfg.eval_samples,
                        self.cfg.eval_batch_size, self.window, self.accelerator.device)

    # ------------------------------------------------------------------ train
    def train(self, stop_after: int | None = None) -> dict:
        """Run the curriculum to the end (or ``stop_after`` more steps); returns a summary and
        writes ``OUT/final`` when the curriculum is done."""
        cfg, acc = self.cfg, self.accelerator
        bar = tqdm(total=cfg.total_steps, initial=self.step, desc="train", unit="step",
                   disable=not (cfg.progress and acc.is_main_process), dynamic_ncols=True)
        done_here = 0
        # Seconds per optimizer step (batch, forward, backward, update; not evaluation or saving),
        # averaged over the steps since the last train record.
        step_seconds, timed_steps = 0.0, 0
        self.model.train()
        while not self.curriculum.finished and (stop_after is None or done_here < stop_after):
            started = time.perf_counter()
            segments = self.curriculum.segments_for_step(self.step)
            batch = self._local_rows(self.data.batch("train", self.step, segments, cfg.batch_size * cfg.grad_accum))
            loss_sum, write_rate = self._accumulate(batch)
            if cfg.grad_clip:
                acc.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            done_here += 1
            loss = float(acc.reduce(loss_sum, reduction="mean"))
            seconds = time.perf_counter() - started
            step_seconds, timed_steps = step_seconds + seconds, timed_steps + 1
            bar.update(1)
            bar.set_postfix(stage=self.curriculum.segments, loss=f"{loss:.3f}", s_per_step=f"{seconds:.2f}")
            if self.step % cfg.log_every == 0 or self.step == 1:
                self.metrics.write({"type": "train", "step": self.step, "stage": self.curriculum.stage,
                                    "stage_segments": self.curriculum.segments, "segments": segments,
                                    "loss": loss, "lr": self.scheduler.get_last_lr()[0], "processes": acc.num_processes,
                                    "seconds_per_step": round(step_seconds / timed_steps, 4),
                                    **({"write_rate": round(float(write_rate.detach()), 6)} if write_rate is not None else {})})
                step_seconds, timed_steps = 0.0, 0
            stage_ends = self.step - self.curriculum.stage_start >= cfg.stage_steps
            result = None
            if self.step % cfg.eval_every == 0 or stage_ends:
                result = self.evaluate(self.curriculum.segments)
                record = {"type": "eval", "step": self.step, "stage": self.curriculum.stage, **result}
                self.metrics.write(record)
                self.history.append(record)
            stage = self.curriculum.stage
            moved = self.curriculum.advance(self.step, result.get("accuracy") if result else None)
            if moved:
                self.metrics.write({"type": "stage", "step": self.step, "finished_stage": stage,
                                    "segments": cfg.curriculum[stage]})
                if not self.curriculum.finished:
                    bar.total = self.step + cfg.stage_steps * (len(cfg.curriculum) - self.curriculum.stage)
                    bar.refresh()
            if self.step % cfg.save_every == 0 or (moved and self.curriculum.finished) or self._save_due():
                self.save()
        bar.close()
        final = None
        if self.curriculum.finished:
            final = self.out / runs.FINAL_DIR
            acc.wait_for_everyone()
            if acc.is_main_process:
                model = acc.unwrap_model(self.model)
                atomic_dir(final, lambda tmp: ckpt.save_model_dir(tmp, model, self.tokenizer))
            acc.wait_for_everyone()
        self.metrics.close()
        return {"step": self.step, "finished": self.curriculum.finished, "final": str(final) if final else None,
                "history": self.history}
