"""rmt.serving: an OpenAI-compatible server (``rmt serve``) for any model the toolkit loads."""

from rmt.serving.server import create_app, serve, serve_in_thread

__all__ = ["create_app", "serve", "serve_in_thread"]
