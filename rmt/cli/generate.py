"""``rmt generate``: write BABILong samples (the public dataset layout, JSONL, parquet or an HF
datasets dir), atomically; optionally lm-evaluation-harness task files for them.

Imports: the data side's modules that `rmt --help` loads anyway (through rmt.training.config) are
imported here at the top; the writers (yaml, csv) and tqdm only when the command runs.
"""

from __future__ import annotations

from typing import Optional

import typer

from rmt import __version__
from rmt.babilong.background import get_background
from rmt.babilong.estimate import ESTIMATE_FROM_TOKENS, describe, estimate
from rmt.babilong.generator import iter_records, unique_tasks_and_lengths
from rmt.babilong.tokens import get_counter
from rmt.cli.options import parse_n_facts, pick_alias, split_list
from rmt.errors import UsageError


def register(app):
    """Add ``rmt generate`` to the app."""

    @app.command("generate")
    def generate_command(
        tasks: Optional[str] = typer.Option(None, "--tasks", help="Tasks, comma separated: qa1..qa20. Default: qa1."),
        task_alias: Optional[str] = typer.Option(None, "--task", hidden=True, help="Old spelling of --tasks."),
        lengths: str = typer.Option("0k", "--lengths", help="Comma-separated lengths: 0k,1k,...,1M,10M or token counts."),
        samples: int = typer.Option(10, "--samples", help="Samples per task and length."),
        seed: int = typer.Option(0, "--seed", help="Seed: same seed, same output byte for byte."),
        tokenizer: Optional[str] = typer.Option(None, "--tokenizer", help="Tokenizer dir/file/cached Hub name, or 'pretokens'. Default: GPT-2 if found offline, else pretokens."),
        background: Optional[str] = typer.Option(None, "--background", help="Background text: a books dir, 'pg19' (online) or 'fallback'. Default: fallback (built-in text)."),
        out: str = typer.Option(..., "--out", help="Output: *.jsonl, *.parquet, or a directory in the public dataset layout "
                                "(load_dataset(DIR, name=LENGTH, split=TASK))."),
        fmt: Optional[str] = typer.Option(None, "--format", help="jsonl | parquet | hub (public layout) | hf (one datasets "
                                          "save_to_disk table). Default: from --out."),
        lm_eval_tasks: Optional[str] = typer.Option(None, "--lm-eval-tasks", help="Also write lm-evaluation-harness task "
                                                    "files for this data into this dir (use with --include_path)."),
        babi_dir: Optional[str] = typer.Option(None, "--babi-dir", help="Take facts from bAbI files in this dir instead of the simulator."),
        split: str = typer.Option("test", "--split", help="bAbI split read with --babi-dir: train | test."),
        n_facts: Optional[str] = typer.Option(None, "--n-facts", help="Facts per simulated story: N or LO,HI. Default: the task's bAbI-like range."),
        facts_alias: Optional[str] = typer.Option(None, "--facts", hidden=True, help="Old spelling of --n-facts."),
        prompt_allowance: Optional[int] = typer.Option(None, "--prompt-allowance", help="Tokens left for the prompt. Default: 300 for named lengths, 0 for token counts."),
        no_length_tell: bool = typer.Option(False, "--no-length-tell", help="Background pieces as short as facts, so facts cannot be found by length."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an --out (or --lm-eval-tasks files) that rmt did not write. Default: refuse."),
    ):
        """Generate BABILong samples: bAbI facts hidden in background text at the given lengths.

        A killed run resumes: rerun the same command and it keeps the samples already written."""
        # Lazy: the writers (yaml, csv) and tqdm cost `rmt --help` ~60 ms (2-core CPU) that it does without.
        from tqdm import tqdm

        from rmt.babilong.io import RecordsWriter, check_records_output
        from rmt.babilong.lm_eval import check_lm_eval_tasks_dir, lm_eval_babilong_dir, write_lm_eval_tasks

        # Every input and output is checked before any work; nothing is written until generation starts.
        path, fmt = check_records_output(out, fmt, overwrite)
        task_list, parsed_lengths, notes = unique_tasks_and_lengths(
            split_list(pick_alias(tasks, task_alias, "--tasks", "--task", "qa1"), "--tasks"),
            split_list(lengths, "--lengths"))
        length_list = [name for name, _ in parsed_lengths]
        facts = parse_n_facts(pick_alias(n_facts, facts_alias, "--n-facts", "--facts"),
                              "--n-facts" if n_facts is not None else "--facts")
        if lm_eval_tasks is not None:
            if fmt != "hub":
                raise UsageError(f"--lm-eval-tasks reads the public layout: give --out a directory (not {out}) or --format hub")
            lm_eval_tasks = check_lm_eval_tasks_dir(lm_eval_tasks, path, overwrite)
            lm_eval_babilong_dir()  # lm-eval missing: one line now, before any generation
        # The tokenizer and background as they resolve now (a default, a path's contents): a resume
        # must count and read with the same ones, or the output would mix two datasets.
        counter = get_counter(tokenizer)
        source = get_background(background) if any(tokens > 0 for _, tokens in parsed_lengths) else None
        resolved = {"tokenizer": counter.identity(), "background": source.identity() if source else None}
        options = dict(babi_dir=babi_dir, split=split, n_facts=facts, prompt_allowance=prompt_allowance,
                       no_length_tell=no_length_tell)
        # Everything that decides the records: a partial output of other settings is not resumed.
        settings = dict(tasks=task_list, lengths=length_list, samples=samples, seed=seed, background=background,
                        tokenizer=tokenizer, version=__version__, **options)
        card = {"tasks": ",".join(task_list), "lengths": ",".join(length_list), "samples": samples, "seed": seed,
                "facts": f"bAbI files ({babi_dir}, {split})" if babi_dir else "rmt world simulator",
                "n_facts": facts, "background": background or "built-in fallback text",
                "tokenizer": counter.name, "no_length_tell": no_length_tell}
        # reads what an interrupted run left; writes nothing yet
        writer = RecordsWriter(path, fmt, settings, card=card, resolved=resolved, discard_mismatch=overwrite)
        records = iter_records(task_list, length_list, samples, seed, source, counter, skip=writer.done, **options)
        total = len(task_list) * len(length_list) * samples
        for note in notes:
            typer.echo(f"note: {note}")
        guess = estimate(len(task_list), parsed_lengths, samples, fmt, path)
        if guess["tokens"] >= ESTIMATE_FROM_TOKENS:
            for line in describe(guess, fmt):
                typer.echo(line)
        if writer.discarded:
            typer.echo(f"discarding the partial output of an interrupted run with other settings ({writer.partial})")
        if writer.done:
            typer.echo(f"resuming: {writer.done} of {total} samples already written by an interrupted run")
        n = writer.write(tqdm(records, total=total, initial=writer.done, desc="generate", unit="sample"))
        typer.echo(f"wrote {n} records to {path}")
        if lm_eval_tasks is not None:
            names = write_lm_eval_tasks(path, lm_eval_tasks, overwrite)
            typer.echo(f"wrote lm-eval tasks to {lm_eval_tasks}: {', '.join(names)}\n"
                       f"run: lm_eval --include_path {lm_eval_tasks} --tasks {names[0]} ...")
