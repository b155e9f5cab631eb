"""rmt.serving: an OpenAI-compatible server (``rmt serve``) for any model the toolkit loads.

Lazy: ``rmt.serving.limits`` (the CLI's option defaults) is importable without pydantic or fastapi."""

__all__ = ["create_app", "serve", "serve_in_thread"]


def __getattr__(name):
    if name in __all__:
        from rmt.serving import server

        return getattr(server, name)
    raise AttributeError(f"module 'rmt.serving' has no attribute {name!r}")
