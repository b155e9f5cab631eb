"""OpenAI-compatible chat endpoints (OpenAI, vLLM, TGI, llama.cpp, ``rmt serve``, ...).

Concurrency with a thread pool over one ``httpx.Client``; retries with exponential backoff on 429,
5xx, timeouts and dropped connections (``Retry-After`` honoured); an on-disk response cache keyed by
everything that determines the answer, so a rerun costs no request. An endpoint that cannot be
reached is one clear error naming its URL.
"""

from __future__ import annotations

import datetime
import email.utils
import hashlib
import json
import math
import os
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

from rmt.errors import UsageError
from rmt.evaluation.base import DEFAULT_MAX_NEW_TOKENS, Answer, Messages, PromptFn, Runner
from rmt.evaluation.prompting import benchmark_prompt
from rmt.evaluation.sqlite_files import check_own_file
from rmt.outputs import check_output

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
CONNECT_RETRIES = 2


class EndpointError(UsageError):
    """The endpoint refused or could not be reached (one line, names the URL)."""


class ContextTooLong(Exception):
    """The endpoint says the prompt exceeds the model's context window."""


# What makes an SQLite file a response cache (another program's database is never written to).
CACHE_TABLES = {"responses": {"key", "response"}}


def check_cache_path(path: str | Path, flag: str | None = "--cache") -> Path:
    """A response cache can be opened at ``path`` without touching anything that is not one (the
    rule of ``--store``): a new file in a writable place, or an existing cache; any other file,
    another program's SQLite database included, is refused before anything is written to it."""

    path = check_output(path, flag or "endpoint response cache", kind="file")
    check_own_file(path, flag, CACHE_TABLES, "endpoint response cache")
    return path


class ResponseCache:
    """SQLite map request-key -> response text, safe across threads and reruns. The file is
    created on the first stored response (a run that fails early leaves nothing behind)."""

    def __init__(self, path: str | Path):
        self.path = check_cache_path(path, None)
        self._lock = threading.Lock()
        self._db = None
        if self.path.exists():
            self._open()

    def _open(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, response TEXT NOT NULL)")

    def get(self, key: str) -> str | None:
        with self._lock:
            if self._db is None:
                return None
            row = self._db.execute("SELECT response FROM responses WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def put(self, key: str, response: str) -> None:
        with self._lock:
            if self._db is None:
                self._open()
            self._db.execute("INSERT OR REPLACE INTO responses(key, response) VALUES (?, ?)", (key, response))

    def close(self) -> None:
        if self._db is not None:
            self._db.close()


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """The wait a ``Retry-After`` header asks for: seconds, or an HTTP date; None when it is
    missing or says nothing usable (negative, NaN, infinite, not a number or a date), so that the
    client backs off on its own schedule instead of trusting it."""
    if not value or not value.strip():
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value.strip())
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:  # an HTTP date is GMT; parsedate gives no zone for "-0000"
            when = when.replace(tzinfo=datetime.timezone.utc)
        seconds = max(0.0, when.timestamp() - (time.time() if now is None else now))
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def reply_text(body) -> str:
    """The assistant's text of a chat completion ``body`` (parsed JSON). ``content`` is a string,
    null (no text: ""), or a list of text parts (``{"type": "text", "text": ...}``); anything
    else raises ValueError saying what is wrong, so that no other value reaches the scorer or the
    cache."""
    try:
        content = body["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise UsageError("no choices[0].message.content") from None
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list) and all(isinstance(part, dict) and part.get("type") == "text"
                                         and isinstance(part.get("text"), str) for part in content):
        return "".join(part["text"] for part in content)
    raise UsageError(f"its message content is a {type(content).__name__}, not text")


def _context_length_error(status: int, body: str) -> bool:
    if status not in (400, 413, 422):
        return False
    text = body.lower()
    return "context_length_exceeded" in text or "context length" in text or "maximum context" in text


class EndpointClient:
    """Chat completions against ``{base_url}/chat/completions`` (``base_url`` ends in ``/v1``)."""

    def __init__(self, base_url: str, model: str, api_key_env: str | None = "OPENAI_API_KEY",
                 concurrency: int = 4, max_retries: int = 5, timeout: float = 60.0,
                 backoff: float = 1.0, max_backoff: float = 60.0, cache: str | Path | None = None,
                 max_tokens: int = DEFAULT_MAX_NEW_TOKENS, require_key: bool = False):
        import httpx  # lazy: the `serve` extra; imported when an endpoint is called

        if not base_url.startswith(("http://", "https://")):
            raise UsageError(f"endpoint URL must start with http:// or https://, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.concurrency = max(1, int(concurrency))
        self.max_retries = max(0, int(max_retries))
        self.backoff, self.max_backoff = backoff, max_backoff
        self.max_tokens = max_tokens
        key = os.environ.get(api_key_env) if api_key_env else None
        if require_key and not key:
            raise UsageError(f"environment variable {api_key_env} (the endpoint's API key) is not set")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._http = httpx.Client(timeout=httpx.Timeout(timeout), headers=headers,
                                  limits=httpx.Limits(max_connections=self.concurrency))
        self.cache = ResponseCache(cache) if cache else None
        self.requests_sent = 0  # HTTP requests actually made (retries included): cache tests read it
        self._count_lock = threading.Lock()

    # -- one request -----------------------------------------------------------------------------
    def _payload(self, messages: Messages) -> dict:
        return {"model": self.model, "messages": messages, "max_tokens": self.max_tokens, "temperature": 0.0}

    def cache_key(self, messages: Messages) -> str:
        blob = json.dumps({"url": self.base_url, **self._payload(messages)}, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        asked = retry_after_seconds(retry_after)
        if asked is not None:
            return min(asked, self.max_backoff)
        return min(self.backoff * (2**attempt), self.max_backoff)

    def chat(self, messages: Messages) -> str:
        """The assistant's reply text; raises :class:`ContextTooLong` or :class:`EndpointError`."""
        import httpx

        key = self.cache_key(messages)
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                return hit
        url = f"{self.base_url}/chat/completions"
        last = ""
        for attempt in range(self.max_retries + 1):
            retry_after = None
            try:
                with self._count_lock:
                    self.requests_sent += 1
                response = self._http.post(url, json=self._payload(messages))
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                last = f"cannot reach endpoint {url}: {exc or type(exc).__name__}"
                if attempt >= CONNECT_RETRIES:  # nobody listening: fail fast, not after minutes of backoff
                    break
            except httpx.TimeoutException:
                last = f"endpoint {url} timed out"
            except httpx.HTTPError as exc:
                last = f"endpoint {url} failed: {type(exc).__name__}: {exc}"
            else:
                if response.status_code == 200:
                    try:
                        body = response.json()
                    except ValueError:
                        body = None
                    try:
                        text = reply_text(body)
                    except ValueError as exc:
                        why = exc if body is not None else "not JSON"
                        raise EndpointError(f"endpoint {url} returned a response that is not a chat completion "
                                            f"({why}): {response.text[:200]!r}") from None
                    if self.cache is not None:
                        self.cache.put(key, text)
                    return text
                if _context_length_error(response.status_code, response.text):
                    raise ContextTooLong(response.text[:200])
                if response.status_code not in RETRY_STATUS:
                    raise EndpointError(f"endpoint {url} answered HTTP {response.status_code}: "
                                        f"{' '.join(response.text.split())[:300]}")
                last = f"endpoint {url} answered HTTP {response.status_code} after {attempt + 1} attempts"
                retry_after = response.headers.get("retry-after")
            if attempt < self.max_retries:
                time.sleep(self._delay(attempt, retry_after))
        raise EndpointError(last)

    # -- many requests ---------------------------------------------------------------------------
    def chat_many(self, conversations: Sequence[Messages]) -> list[str | None]:
        """Replies in order, ``concurrency`` requests in flight; None where the context is too long."""

        def one(messages):
            try:
                return self.chat(messages)
            except ContextTooLong:
                return None

        if self.concurrency == 1 or len(conversations) <= 1:
            return [one(m) for m in conversations]
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(one, conversations))

    def list_models(self) -> list[str]:
        import httpx

        url = f"{self.base_url}/models"
        try:
            response = self._http.get(url)
        except httpx.HTTPError as exc:
            raise EndpointError(f"cannot reach endpoint {url}: {exc or type(exc).__name__}") from None
        if response.status_code != 200:
            raise EndpointError(f"endpoint {url} answered HTTP {response.status_code}")
        try:
            ids = [m["id"] for m in response.json().get("data", [])]
        except (ValueError, KeyError, TypeError, AttributeError):
            ids = None
        if ids is None or not all(isinstance(i, str) for i in ids):
            raise EndpointError(f"endpoint {url} returned a response that is not a model list: {response.text[:200]!r}")
        return ids

    def close(self) -> None:
        self._http.close()
        if self.cache is not None:
            self.cache.close()


class EndpointRunner(Runner):
    """The benchmark prompt as chat messages, sent to an OpenAI-compatible endpoint."""

    def __init__(self, client: EndpointClient, prompt_fn: PromptFn | None = None, name: str | None = None):
        self.client = client
        self.prompt_fn = prompt_fn or benchmark_prompt
        self.prompt_set = getattr(self.prompt_fn, "prompt_set", "builtin")
        self.name = name or f"{client.model}@{client.base_url}"
        self.batch_size = client.concurrency * 4

    def prompt(self, record: dict) -> Messages:
        prompt = self.prompt_fn(record, True)
        return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt

    def identity(self) -> dict:
        """An endpoint's weights cannot be read: its model name and base URL stand for them. The
        decoding settings are what the client sends with every request (also in the cache key)."""
        sent = {k: v for k, v in self.client._payload([]).items() if k not in ("model", "messages")}
        return {"weights": f"openai:{self.client.model}@{self.client.base_url}", "decoding": sent}

    def answer(self, records: Sequence[dict]) -> list[Answer]:
        replies = self.client.chat_many([self.prompt(r) for r in records])
        return [Answer(None, "over_window") if text is None else Answer(text, "ok") for text in replies]

    def close(self) -> None:
        self.client.close()
