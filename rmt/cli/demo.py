"""`rmt demo`: stream a long input (1M tokens by default) through a small RMT; print throughput and peak memory.

Lazy imports: the rooms (and torch, transformers) are imported inside the command functions, so
`rmt --help` imports neither (see rmt/cli/__init__.py).
"""

import json
import sys
import time

import typer

from rmt.errors import UsageError


def _peak_rss_mib() -> float:
    import resource  # lazy: Unix only

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def run_demo(tokens: int, segment_size: int, mem_tokens: int, layers: int, hidden: int, vocab: int,
             self_retrieval: bool, checkpoint: str | None, chunk: int, seed: int, threads: int | None, progress: bool = True,
             compile: bool = False, model_name: str | None = None, dtype: str | None = None) -> dict:
    """Stream `tokens` seeded random token ids through an RMT: a small random GPT-2, a saved RMT
    (`checkpoint`), or fresh memory around a pretrained model (`model_name`, e.g. smollm2-135m).
    ``dtype``: auto (None; ``rmt.precision``: bf16 weights where bf16 is native and the model has
    20M parameters or more), float32, bfloat16 or float16."""
    if checkpoint and model_name:
        raise UsageError("give --checkpoint (a saved RMT) or --model (a pretrained base model), not both")
    if tokens < 1:
        raise UsageError(f"--tokens must be >= 1, got {tokens}")
    if chunk < 1:
        raise UsageError(f"--chunk must be >= 1, got {chunk}")
    if hidden < 1 or layers < 1 or vocab < 2:
        raise UsageError(f"--hidden and --layers must be >= 1 and --vocab >= 2, got {hidden}, {layers}, {vocab}")
    from rmt.precision import apply_dtype, check_dtype

    dtype = check_dtype(dtype)

    import torch
    from tqdm import tqdm

    from rmt import RMTConfig, RecurrentMemoryTransformer

    from rmt.threads import set_threads

    set_threads(threads)  # None: one per core not already busy
    torch.manual_seed(seed)
    if checkpoint:
        from rmt import runs

        model = RecurrentMemoryTransformer.from_pretrained(runs.rmt_checkpoint_of(checkpoint) or checkpoint)
    elif model_name:
        from rmt import runs

        base = runs.load_causal_lm(runs.locate(model_name).where)
        model = RecurrentMemoryTransformer.wrap(base, RMTConfig(num_mem_tokens=mem_tokens, segment_size=segment_size, self_retrieval=self_retrieval))
    else:
        from rmt.training.build import scratch_causal_lm, segment_positions  # the one from-scratch builder

        heads = max(1, hidden // 64)
        if hidden % heads:
            raise UsageError(f"--hidden must be a multiple of 64 or below 64, got {hidden}")
        config = RMTConfig(num_mem_tokens=mem_tokens, segment_size=segment_size, self_retrieval=self_retrieval)
        # The position table holds one segment pass: its tokens and what the memory kind adds.
        base = scratch_causal_lm("gpt2", vocab, hidden, layers, heads, segment_positions(config, "gpt2", hidden, vocab))
        model = RecurrentMemoryTransformer.wrap(base, config)
    model.eval()
    precision = apply_dtype(model, dtype)
    if progress:
        print(f"precision: {precision}", file=sys.stderr, flush=True)
    if compile:
        model.compile_layers()  # opt-in: equal up to float rounding; the first segments compile (seconds)
    vocab_size = model.adapter.vocab_size
    generator = torch.Generator().manual_seed(seed)
    bar = tqdm(total=tokens, unit="tok", unit_scale=True, desc="streaming", disable=not progress)

    def chunks():  # produced on the fly: the whole input never exists in memory
        done = 0
        while done < tokens:
            n = min(chunk, tokens - done)
            yield torch.randint(0, vocab_size, (1, n), generator=generator)
            done += n
            bar.update(n)

    start = time.perf_counter()
    state = model.stream(chunks())
    seconds = time.perf_counter() - start
    bar.close()
    memory = state.memory if isinstance(state.memory, torch.Tensor) else state.memory.A  # ARMT: every layer's A
    return {
        "tokens": state.n_tokens,
        "segments": state.n_segments,
        "seconds": round(seconds, 3),
        "tokens_per_s": round(state.n_tokens / seconds, 1),
        "peak_rss_mib": round(_peak_rss_mib(), 1),
        "memory_shape": list(memory.shape),
        "memory_finite": bool(torch.isfinite(memory).all()),
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "precision": precision,
        "threads": torch.get_num_threads(),
    }


def register(app):
    """Add this module's commands to the `rmt` app."""

    @app.command("demo")
    def demo(
        tokens: int = typer.Option(1_000_000, "--tokens", help="Total tokens to stream."),
        segment_size: int = typer.Option(512, "--segment-size", help="Input tokens per segment."),
        mem_tokens: int = typer.Option(16, "--mem-tokens", help="Memory tokens."),
        layers: int = typer.Option(2, "--layers", help="Layers of the random GPT-2 base model."),
        hidden: int = typer.Option(128, "--hidden", help="Hidden size of the random GPT-2 base model."),
        vocab: int = typer.Option(1024, "--vocab", help="Vocabulary size of the random GPT-2 base model."),
        self_retrieval: bool = typer.Option(False, "--self-retrieval", help="Use RMT-R (its store grows with the input)."),
        checkpoint: str = typer.Option(None, "--checkpoint", help="Stream through a saved RMT instead of a random one."),
        model: str = typer.Option(None, "--model", help="Stream through fresh memory around a pretrained model (e.g. "
                                  "smollm2-135m, a local dir or .gguf file, a hub name) instead of a random GPT-2."),
        chunk: int = typer.Option(4096, "--chunk", help="Tokens per chunk fed to model.stream()."),
        seed: int = typer.Option(0, "--seed", help="Seed of the random model and the random input."),
        threads: int = typer.Option(None, "--threads", help="torch CPU threads. Default: one per core not already busy."),
        dtype: str = typer.Option("auto", "--dtype", help="Weights: auto, float32, bfloat16 or float16. auto: bf16 where "
                                  "this CPU/GPU has native bf16 and the model has 20M parameters or more (a pretrained "
                                  "--model), else as built."),
        compile: bool = typer.Option(False, "--compile", help="torch.compile each layer's MLP (model.compile_layers(): "
                                     "equal up to float rounding; compiling takes seconds, so it pays on long streams)."),
    ):
        """Stream a long random input through a small RMT; print throughput and peak memory (RSS)."""
        result = run_demo(tokens, segment_size, mem_tokens, layers, hidden, vocab, self_retrieval, checkpoint, chunk, seed, threads,
                          compile=compile, model_name=model, dtype=dtype)
        print(f"streamed {result['tokens']:,} tokens in {result['segments']:,} segments: "
              f"{result['tokens_per_s']:,.0f} tokens/s, {result['seconds']:.1f} s, peak RSS {result['peak_rss_mib']:.0f} MiB, "
              f"{result['dtype']} weights")
        print(json.dumps(result))
