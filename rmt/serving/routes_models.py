"""``GET /health`` and ``GET /v1/models``: they never touch the model, so they are async and run on
the event loop, never behind generation or the worker threads."""

import asyncio
import threading

from rmt.serving.state import AppState


def register(app, state: AppState) -> None:
    @app.get("/health")
    async def health():
        """Liveness and what is in flight: requests pending (waiting or decoding), and the server's
        asyncio tasks and Python threads (the worker pool's idle threads counted apart: a bounded
        cache, pruned on later requests), so a soak (bench/soak.py) can tell that nothing is left behind."""
        batcher = state.batcher
        pool = sum(1 for t in threading.enumerate() if t.name == "AnyIO worker thread")
        return {"status": "ok", "model": state.model_id, "pending": batcher.pending,
                "max_queue": state.limits.max_queue,
                "decoding_rows": batcher.busy_rows, "cancelled_jobs": batcher.cancelled_jobs,
                "tasks": len(asyncio.all_tasks()),
                "threads": threading.active_count() - pool, "worker_threads": pool}

    @app.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": [state.model_card()]}

    @app.get("/v1/models/{name:path}")
    async def get_model(name: str):
        state.check_model(name)
        return state.model_card()
