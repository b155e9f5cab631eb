"""``rmt generate``: write BABILong samples (JSONL, parquet or an HF datasets dir), atomically."""

from __future__ import annotations

from typing import Optional

import typer


def _parse_facts(spec: Optional[str]):
    if spec is None:
        return None
    try:
        if "-" in spec:
            lo, hi = (int(x) for x in spec.split("-", 1))
            return (lo, hi)
        return int(spec)
    except ValueError:
        raise ValueError(f"--facts {spec!r} must be a number (e.g. 6) or a range (e.g. 2-10)") from None


def register(app):
    """Add ``rmt generate`` to the app."""

    @app.command("generate")
    def generate_command(
        task: str = typer.Option("qa1", "--task", help="Task(s), comma separated: qa1..qa20."),
        lengths: str = typer.Option("0k", "--lengths", help="Comma-separated lengths: 0k,1k,...,1M,10M or token counts."),
        samples: int = typer.Option(10, "--samples", help="Samples per task and length."),
        seed: int = typer.Option(0, "--seed", help="Seed: same seed, same output byte for byte."),
        tokenizer: Optional[str] = typer.Option(None, "--tokenizer", help="Tokenizer dir/file/cached Hub name, or 'pretokens'. Default: GPT-2 if found offline, else pretokens."),
        background: Optional[str] = typer.Option(None, "--background", help="Books dir, 'pg19' (online) or 'fallback' (default, built-in text)."),
        out: str = typer.Option(..., "--out", help="Output: *.jsonl, *.parquet, or a directory (HF datasets save_to_disk)."),
        fmt: Optional[str] = typer.Option(None, "--format", help="jsonl | parquet | hf (default: from --out)."),
        babi_dir: Optional[str] = typer.Option(None, "--babi-dir", help="Take facts from bAbI files in this dir instead of the simulator."),
        split: str = typer.Option("test", "--split", help="bAbI split with --babi-dir: train | test."),
        facts: Optional[str] = typer.Option(None, "--facts", help="Facts per simulated story: N or LO-HI (default: task's bAbI-like range)."),
        prompt_allowance: Optional[int] = typer.Option(None, "--prompt-allowance", help="Tokens left for the prompt (default 300 for named lengths, 0 for token counts)."),
        no_length_tell: bool = typer.Option(False, "--no-length-tell", help="Background pieces as short as facts, so facts cannot be found by length."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out that rmt did not write (default: refuse)."),
    ):
        """Generate BABILong samples: bAbI facts hidden in background text at the given lengths.

        A killed run resumes: rerun the same command and it keeps the samples already written."""
        from tqdm import tqdm

        from rmt import __version__
        from rmt.babilong.generator import iter_records
        from rmt.babilong.io import RecordsWriter, check_records_output

        path, fmt = check_records_output(out, fmt, overwrite)
        tasks = [t for t in task.split(",") if t.strip()]
        length_list = [x.strip() for x in lengths.split(",") if x.strip()]
        if not tasks:
            raise ValueError("--task is empty; allowed: qa1 ... qa20")
        if not length_list:
            raise ValueError("--lengths is empty; give e.g. 0k,4k,32k")
        n_facts = _parse_facts(facts)
        options = dict(babi_dir=babi_dir, split=split, n_facts=n_facts, prompt_allowance=prompt_allowance,
                       no_length_tell=no_length_tell)
        # Everything that decides the records: a partial output of other settings is not resumed.
        settings = dict(tasks=tasks, lengths=length_list, samples=samples, seed=seed, background=background,
                        tokenizer=tokenizer, version=__version__, **options)
        writer = RecordsWriter(path, fmt, settings)  # reads what an interrupted run left; writes nothing yet
        records = iter_records(tasks, length_list, samples, seed, background, tokenizer, skip=writer.done, **options)
        total = len(tasks) * len(length_list) * samples
        if writer.discarded:
            typer.echo(f"discarding the partial output of an interrupted run with other settings ({writer.partial})")
        if writer.done:
            typer.echo(f"resuming: {writer.done} of {total} samples already written by an interrupted run")
        n = writer.write(tqdm(records, total=total, initial=writer.done, desc="generate", unit="sample"))
        typer.echo(f"wrote {n} records to {path}")
