"""`rmt eval`, `rmt serve`, `rmt report`: evaluate any model on BABILong, serve a model behind an
OpenAI-compatible API, and turn results stores into tables and heatmaps.

Lazy imports: the rooms (and torch, transformers) are imported inside the command functions, so
`rmt --help` imports neither (see rmt/cli/__init__.py).
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path
from typing import List, Optional

import typer

from rmt.errors import UsageError
from rmt.serving.limits import Limits

RAG_MODES = ("off", "on", "both")


def _split_list(value: str, what: str) -> list[str]:
    items = [x.strip() for x in value.split(",") if x.strip()]
    if not items:
        raise UsageError(f"{what} must be a comma-separated list, got {value!r}")
    return items


def _set_threads(threads, local: bool = True):
    """``--threads``, or one per core not already busy (``rmt.threads``); torch is imported only
    for local models (an endpoint evaluation never needs it)."""
    if threads is not None and threads < 1:
        raise UsageError(f"--threads must be >= 1, got {threads}")
    if local:
        from rmt.threads import set_threads

        set_threads(threads)


def register(app):
    @app.command("eval")
    def eval_command(
        models: List[str] = typer.Argument(..., help="Models: an HF model dir or hub name, an RMT checkpoint dir, "
                                           "or openai:MODEL@BASE_URL for an OpenAI-compatible endpoint."),
        tasks: Optional[str] = typer.Option(None, help="Comma-separated tasks, e.g. qa1,qa2,qa3. Default: qa1."),
        task_alias: Optional[str] = typer.Option(None, "--task", hidden=True, help="Old spelling of --tasks."),
        lengths: str = typer.Option("0k,1k,4k", help="Comma-separated lengths, e.g. 0k,4k,32k,128k (or token counts)."),
        samples: int = typer.Option(10, help="Samples per task and length."),
        seed: int = typer.Option(0, help="Seed of locally generated samples."),
        data: Optional[Path] = typer.Option(None, help="A dataset instead of generating: a folder written by `rmt generate` "
                                            "(or a public-layout snapshot, a saved DatasetDict), JSONL or parquet."),
        public: bool = typer.Option(False, "--public", help="Use the public RMT-team/babilong dataset (online)."),
        background: Optional[str] = typer.Option(None, help="Background books dir for generation. Default: built-in fallback text."),
        tokenizer: Optional[str] = typer.Option(None, help="Tokenizer that counts generation lengths (name or path)."),
        store: Path = typer.Option(Path("results.sqlite"), help="Results store (SQLite); reruns skip done cells."),
        name: Optional[str] = typer.Option(None, help="Name of the model in the store (one model only). Default: its spec."),
        batch_size: int = typer.Option(8, help="Samples per batch for local models."),
        max_new_tokens: int = typer.Option(20, help="Answer length limit (greedy decoding)."),
        device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1 ... Default: cuda when available."),
        dtype: Optional[str] = typer.Option(None, help="Weights of local models: auto, float32, bfloat16 or float16. "
                                            "Default: auto (bf16 where this CPU/GPU has native bf16 and the model "
                                            "has 20M parameters or more, else as saved)."),
        chat_template: Optional[bool] = typer.Option(None, "--chat-template/--no-chat-template",
                                                     help="Ask local models through their tokenizer's chat template "
                                                     "(the benchmark prompt is the user turn). Default: on when the "
                                                     "tokenizer has one. Recorded with every answer."),
        prompt_style: Optional[str] = typer.Option(None, help="benchmark (instruction, examples, post-prompt), plain "
                                                   "('input question', the rmt train format) or auto (plain for rmt "
                                                   "train checkpoints). Default: auto."),
        prompt_alias: Optional[str] = typer.Option(None, "--prompt", hidden=True, help="Old spelling of --prompt-style."),
        prompts: Optional[str] = typer.Option(None, help="Prompt wording: builtin, lm-eval (lm-evaluation-harness's babilong "
                                              "prompts, read from the installed lm-eval), or a JSON/YAML prompt file. Default: builtin."),
        prompt_file: Optional[Path] = typer.Option(None, hidden=True, help="Old spelling of --prompts FILE."),
        instruction: bool = typer.Option(True, "--instruction/--no-instruction", help="Prompt part: the task instruction."),
        examples: bool = typer.Option(True, "--examples/--no-examples", help="Prompt part: few-shot examples."),
        post_prompt: bool = typer.Option(True, "--post-prompt/--no-post-prompt", help="Prompt part: the answer-format line."),
        context_tags: bool = typer.Option(True, "--context-tags/--no-context-tags", help="Wrap the context in <context> tags."),
        rag: str = typer.Option("off", help="Retrieval baseline: off, on (RAG only) or both (model and RAG(model))."),
        rag_top_k: int = typer.Option(5, help="Retrieved pieces per question."),
        rag_split: str = typer.Option("sentences", help="How the haystack is split: sentences, pysbd or chunks."),
        rag_chunk_words: int = typer.Option(64, help="Words per piece with --rag-split chunks."),
        api_key_env: str = typer.Option("OPENAI_API_KEY", help="Environment variable holding the endpoint's API key."),
        concurrency: int = typer.Option(4, help="Requests in flight to an endpoint."),
        retries: int = typer.Option(5, help="Retries on 429/5xx/timeouts (exponential backoff)."),
        timeout: float = typer.Option(120.0, help="Seconds per endpoint request."),
        cache: Optional[Path] = typer.Option(None, help="Endpoint response cache. Default: STORE.endpoint-cache beside the store."),
        threads: Optional[int] = typer.Option(None, help="torch CPU threads. Default: one per core not already busy."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    ):
        """Evaluate models on BABILong; every answer is scored and stored as soon as it is known.
        Under `torchrun` or `accelerate launch` the processes share the cells and rank 0 writes the store."""
        from rmt.cli.train import check_launch
        from rmt.evaluation.endpoint import check_cache_path
        from rmt.evaluation.evaluate import ENDPOINT_PREFIX, check_device, evaluate, load_records_for_eval, load_runner
        from rmt.evaluation.prompting import STYLES
        from rmt.evaluation.report import build_table, format_terminal
        from rmt.evaluation.shard import launched_shard
        from rmt.evaluation.store import ResultsStore, check_store_path

        _set_threads(threads, local=any(not spec.startswith(ENDPOINT_PREFIX) for spec in models))
        if rag not in RAG_MODES:
            raise UsageError(f"unknown --rag {rag!r}; allowed: {', '.join(RAG_MODES)}")
        if name and (len(models) > 1 or rag == "both"):
            raise UsageError("--name names one model; leave it out when evaluating several (or with --rag both)")
        if data is not None and public:
            raise UsageError("give either --data or --public, not both")
        for value, what in ((batch_size, "--batch-size"), (max_new_tokens, "--max-new-tokens"),
                            (concurrency, "--concurrency"), (rag_top_k, "--rag-top-k")):
            if value < 1:
                raise UsageError(f"{what} must be >= 1, got {value}")
        from rmt.cli.options import pick_alias

        tasks = pick_alias(tasks, task_alias, "--tasks", "--task", "qa1")
        prompts = pick_alias(prompts, str(prompt_file) if prompt_file else None, "--prompts", "--prompt-file")
        prompt = pick_alias(prompt_style, prompt_alias, "--prompt-style", "--prompt", "auto")
        if prompt not in STYLES:
            raise UsageError(f"unknown --prompt-style {prompt!r}; allowed: {', '.join(STYLES)}")
        check_device(device)
        if dtype is not None:
            from rmt.precision import check_dtype

            check_dtype(dtype)
        if all(spec.startswith(ENDPOINT_PREFIX) for spec in models):
            # an endpoint's server decides both; silently ignoring the flag would mislabel the results
            for flag, value in (("--dtype", dtype), ("--chat-template/--no-chat-template", chat_template)):
                if value is not None:
                    raise UsageError(f"{flag} applies to local models; every model given is an endpoint "
                                     f"({ENDPOINT_PREFIX}...), whose server decides it")
        # only the parts switched off, so that each style keeps its own defaults
        switches = {"instruction": instruction, "examples": examples, "post_prompt": post_prompt,
                    "context_tags": context_tags}
        prompt_options = {k: False for k, on in switches.items() if not on}
        if prompts and prompts != "builtin":
            from rmt.babilong.prompts import resolve_prompts

            resolve_prompts(prompts)  # a bad or missing file, or no lm-eval: one line now, before any model loads
            prompt_options["prompts"] = prompts
        check_launch("eval")
        shard = launched_shard(device)  # under a launcher: this process's part of the cells; rank 0 writes the store
        if shard.world_size > 1 and device is None:
            device = shard.device  # each process its own GPU (cuda:LOCAL_RANK), or the CPU
        # Every output is checked before any work (the store is created only once a model has loaded).
        if any(spec.startswith(ENDPOINT_PREFIX) for spec in models):
            cache = cache or store.with_name(store.name + ".endpoint-cache")
        if shard.is_main:
            check_store_path(store, "--store")
            if store.exists():
                ResultsStore(store, read_only=True).close()  # another benchmark version: fail before any work
            if cache is not None:
                if cache.resolve() == store.resolve():
                    raise UsageError(f"--cache {cache} is the --store; give the endpoint response cache its own file")
                check_cache_path(cache, "--cache")
        records = load_records_for_eval(_split_list(tasks, "--tasks"), _split_list(lengths, "--lengths"), samples,
                                        seed=seed, data=data, public=public, background=background, tokenizer=tokenizer)
        for spec in models:
            if not spec.startswith(ENDPOINT_PREFIX) and shard.is_main:
                print(f"loading model {spec} ...", flush=True)  # seconds of silence otherwise
            for top_k in {"off": [0], "on": [rag_top_k], "both": [0, rag_top_k]}[rag]:
                runner = load_runner(
                    spec, device=device, batch_size=batch_size, max_new_tokens=max_new_tokens,
                    prompt_options=prompt_options, prompt_style=prompt,
                    api_key_env=api_key_env, concurrency=concurrency, max_retries=retries, timeout=timeout,
                    cache=cache, rag_top_k=top_k,
                    rag_split=rag_split, rag_chunk_words=rag_chunk_words, name=name,
                    dtype=(dtype or "auto") if not spec.startswith(ENDPOINT_PREFIX) else None,
                    chat_template=chat_template if not spec.startswith(ENDPOINT_PREFIX) else None)
                local = getattr(runner, "model", None)
                if shard.is_main and getattr(local, "precision", None):
                    print(f"precision: {local.precision}", flush=True)
                if hasattr(local, "show_progress"):  # a long cell's own bar (tokens/s, ETA)
                    local.show_progress = progress and shard.is_main
                # The store is created only once a model has loaded, and removed again when the
                # first model fails before storing anything: a typo leaves no file behind. Only
                # rank 0 of a launched run opens it.
                new_store, empty = shard.is_main and not store.exists(), False
                try:
                    with (ResultsStore(store) if shard.is_main else nullcontext(store)) as results:
                        try:
                            summary = evaluate(runner, records, results, progress=progress, shard=shard)
                        except BaseException:
                            empty = new_store and len(results) == 0
                            raise
                except BaseException:
                    if new_store and empty:
                        for path in (store, Path(f"{store}-wal"), Path(f"{store}-shm")):
                            path.unlink(missing_ok=True)
                    raise
                finally:
                    runner.close()
                if not shard.is_main:
                    continue
                acc = summary.accuracy()
                print(f"{summary.model}: {summary.done} answered, {summary.skipped} already done, "
                      f"{summary.over_window} over window"
                      + (f", {summary.truncated} read as the last window" if summary.truncated else "")
                      + (f", {summary.rescored} stored scores updated" if summary.rescored else "")
                      + (f", accuracy {100 * acc:.1f}% on the new answers" if acc is not None else "")
                      + (f" ({shard.world_size} processes)" if shard.world_size > 1 else ""))
        if not shard.is_main:
            return
        with ResultsStore(store, read_only=True) as results:
            print()
            print(format_terminal(build_table(results.results())))
        print(f"\nresults: {store}")

    @app.command("serve")
    def serve_command(
        model: str = typer.Argument(..., help="An HF model dir or hub name, or an RMT checkpoint dir."),
        host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
        port: int = typer.Option(8000, help="Port (0: a free one, printed)."),
        model_id: Optional[str] = typer.Option(None, help="Model name clients use. Default: the model argument."),
        device: Optional[str] = typer.Option(None, help="cpu, cuda, ... Default: cuda when available."),
        dtype: Optional[str] = typer.Option(None, help="Weights: float32, bfloat16 or float16. Default: as saved."),
        chat_template: Optional[bool] = typer.Option(None, "--chat-template/--no-chat-template",
                                                     help="Render /v1/chat/completions messages with the tokenizer's "
                                                     "chat template. Default: on when the tokenizer has one."),
        max_batch_size: int = typer.Option(Limits.max_batch, help="Most prompts (requests x n) decoded together in one batch."),
        max_tokens_limit: int = typer.Option(Limits.max_tokens, help="Most new tokens one completion may ask for (max_tokens), "
                                             "for every model kind; more is a 400."),
        max_prompt_tokens: int = typer.Option(Limits.max_prompt_tokens, help="Most prompt tokens one prompt may have, "
                                              "for every model kind (a memory model has no window to bound it); "
                                              "more is a 400 (context_length_exceeded)."),
        max_request_prompts: int = typer.Option(Limits.max_request_prompts, help="Most completions (prompts x n) in one request; more is a 400."),
        max_queue: int = typer.Option(Limits.max_queue, help="Most requests waiting or decoding; more get 429 (retry later)."),
        api_key: Optional[str] = typer.Option(None, envvar="RMT_API_KEY", show_envvar=True,
                                              help="Require 'Authorization: Bearer KEY' on every route but /health "
                                              "(prefer the environment variable: a flag shows in ps). Default: none."),
        max_requests: Optional[int] = typer.Option(None, help="Exit after this many requests (tests, batch jobs)."),
        threads: Optional[int] = typer.Option(None, help="torch CPU threads. Default: one per core not already busy."),
    ):
        """Serve a model behind an OpenAI-compatible API: /v1/chat/completions, /v1/completions
        (streaming, n, stop, temperature/top_p), /v1/models, /health; concurrent requests are batched,
        within per-request and queue limits."""
        start = time.perf_counter()
        if not 0 <= port <= 65535:
            raise UsageError(f"--port must be in 0..65535, got {port}")
        if max_requests is not None and max_requests < 1:
            raise UsageError(f"--max-requests must be >= 1, got {max_requests}")
        for value, flag in ((max_batch_size, "--max-batch-size"), (max_tokens_limit, "--max-tokens-limit"),
                            (max_prompt_tokens, "--max-prompt-tokens"), (max_request_prompts, "--max-request-prompts"), (max_queue, "--max-queue")):
            if value < 1:
                raise UsageError(f"{flag} must be >= 1, got {value}")
        if api_key is not None and not api_key.strip():
            raise UsageError("--api-key (or RMT_API_KEY) is empty; give a key or leave it unset")
        limits = Limits(max_tokens=max_tokens_limit, max_prompt_tokens=max_prompt_tokens, max_request_prompts=max_request_prompts, max_queue=max_queue,
                        max_batch=max_batch_size)
        if dtype is not None:
            from rmt.evaluation.hf import DTYPES

            if dtype not in DTYPES:
                raise UsageError(f"unknown --dtype {dtype!r}; allowed: {', '.join(DTYPES)}")
        print(f"rmt serve: loading {model} (importing torch and transformers, then the weights) ...", flush=True)
        _set_threads(threads)
        from rmt.evaluation.evaluate import load_local_model
        from rmt.serving.server import serve

        loaded = load_local_model(model, device=device, dtype=dtype, chat_template=chat_template)
        window = f"window {loaded.window} tokens" if loaded.window else "no window (RMT streams any length)"
        chat = ("chat template on" if loaded.uses_chat_template else
                "chat template off" if loaded.has_chat_template else "no chat template")
        print(f"rmt serve: loaded {type(loaded).__name__} on {getattr(loaded, 'device', 'cpu')}, {window}, {chat}, "
              f"in {time.perf_counter() - start:.1f} s", flush=True)
        serve(loaded, host=host, port=port, model_id=model_id or model, max_requests=max_requests, limits=limits,
              api_key=api_key)

    @app.command("report")
    def report_command(
        stores: List[Path] = typer.Argument(..., help="One or more results stores (rmt eval --store)."),
        markdown: Optional[Path] = typer.Option(None, help="Write the tables as Markdown here."),
        png: Optional[Path] = typer.Option(None, help="Write the heatmap (tasks x lengths per model) here."),
        models: Optional[str] = typer.Option(None, help="Comma-separated models to show, in this order. Default: all."),
        mode: str = typer.Option("official", help="Scoring rule: official (leaderboard) or strict (whole words)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace a --markdown or --png file that rmt did "
                                       "not write. Default: refuse (its own reports are replaced)."),
    ):
        """Accuracy tables (task x length) in the terminal and as Markdown, and a heatmap PNG."""
        from rmt.evaluation.report import (check_markdown_output, check_png_output, format_terminal, load_table,
                                           save_heatmap, write_markdown)

        # Both outputs are checked before any is written: a bad --png leaves no new --markdown behind.
        if markdown:
            check_markdown_output(markdown, "--markdown", overwrite)
        if png:
            check_png_output(png, "--png", overwrite)
        table = load_table(stores, mode=mode, models=_split_list(models, "--models") if models else None)
        print(format_terminal(table))
        if markdown:
            print(f"markdown: {write_markdown(table, markdown, flag='--markdown', overwrite=overwrite)}")
        if png:
            print(f"heatmap: {save_heatmap(table, png, flag='--png', overwrite=overwrite)}")
