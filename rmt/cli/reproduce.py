"""`rmt reproduce` (the seeds' tables) and `rmt diagnose` (the memory, segment by segment).

Lazy imports: the rooms (and torch, transformers) are imported inside the command functions, so
`rmt --help` imports neither (see rmt/cli/__init__.py).
"""

from __future__ import annotations

import json
from typing import Optional

import typer


def register(app):
    @app.command("reproduce")
    def reproduce_command(
        recipes: Optional[str] = typer.Option(None, "--recipes", help="Comma list of recipes: memorize, detect, reason, qa1, qa2 (small models from scratch; the default), smol-qa1 .. smol-qa5 (the pretrained smollm2-135m with memory)."),
        rows: Optional[str] = typer.Option(None, "--rows", help="Comma list of rows to run, e.g. rmt,armt,no-memory,rag,llm (llm: the pretrained base zero-shot, smol-* recipes). Default: every row of each recipe."),
        seeds: str = typer.Option("0,1,2", "--seeds", help="Comma list of seeds; the tables show mean and min over them."),
        output_dir: str = typer.Option("runs/reproduce", "--output-dir", help="Where to write; rerun the same command to resume."),
        quick: bool = typer.Option(False, "--quick", help="Tiny models, a few steps, short inputs: a smoke test of the whole pipeline."),
        threads: int = typer.Option(1, "--threads", help="torch CPU threads per job (the small models gain nothing from more)."),
        jobs: Optional[int] = typer.Option(None, "--jobs", help="Jobs run at once, each in its own process. Default: one per idle core."),
        diagnose: bool = typer.Option(True, "--diagnose/--no-diagnose", help="Also run rmt diagnose on seed 0 of each memory row."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    ):
        """Train and evaluate every recipe x row x seed (RMT, RMT-R, ARMT, no memory, RAG, LLM), resumably;
        write the summary table (mean and min over seeds), the rmt report table and heatmap."""
        from rmt.training.reproduce import reproduce  # lazy: torch and transformers (~8 s here), not for --help

        result = reproduce(recipes=recipes, seeds=seeds, output_dir=output_dir, quick_settings=quick, threads=threads,
                           jobs=jobs, diagnose=diagnose, progress=progress, rows=rows)
        print(json.dumps(result))

    @app.command("diagnose")
    def diagnose_command(
        checkpoint: str = typer.Argument(..., help="An RMT checkpoint: an rmt train output dir, its final/, or a checkpoints/step-N dir."),
        segments: int = typer.Option(1024, "--segments", help="Input length in segments."),
        samples: int = typer.Option(16, "--samples", help="Samples of the checkpoint's own task (its evaluation set)."),
        out: Optional[str] = typer.Option(None, "--out", help="Output dir. Default: the run's diagnose/."),
        batch_size: int = typer.Option(16, "--batch-size", help="Samples read together."),
        threads: int = typer.Option(1, "--threads", help="torch CPU threads."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    ):
        """Memory statistics per segment (norm, change, cosine, gated write rate, ARMT's ||A|| and ||z||)
        and accuracy by the distance from the fact to the question: a PNG, a JSON and a text summary."""
        from rmt.training.diagnose import diagnose  # lazy: torch and transformers, not for --help

        result = diagnose(checkpoint, segments=segments, samples=samples, out=out, batch_size=batch_size,
                          threads=threads, progress=progress)
        print()
        print(open(result["files"]["text"]).read().rstrip())
        print()
        for name, path in result["files"].items():
            print(f"{name}: {path}")
