"""Token counters: how many tokens a piece of text is, in a chosen tokenizer.

The haystack is measured in tokens. ``get_counter`` accepts:

* ``None``: GPT-2 (the reference's tokenizer) if it can be found offline, in this order:
  ``$RMT_GPT2_TOKENIZER`` (a dir or tokenizer.json), ``../shared/data/tokenizers/gpt2`` beside the
  checkout, the Hugging Face cache (``gpt2`` downloaded before). Otherwise the built-in
  ``pretokens`` counter (below), and ``Counter.name`` says which was used.
* ``"pretokens"``: counts GPT-2 *pre-tokens* (the regex pieces GPT-2 splits text into before BPE).
  Every pre-token is at least one BPE token, so this is a lower bound of the GPT-2 count; on
  English prose it is the number of words plus punctuation runs. Needs no files.
* a path: a directory with ``tokenizer.json`` or GPT-2 style ``vocab.json`` + ``merges.txt``, or
  a ``tokenizer.json`` file;
* a Hub name (``"gpt2"``): loaded from the local cache only (never downloads; errors if absent);
* a ``tokenizers.Tokenizer`` or a ``transformers`` tokenizer object.

Only the ``tokenizers`` library is used for files and objects, so ``rmt.babilong`` stays free of
torch; ``transformers`` is imported only for Hub names without a ``tokenizer.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from rmt.errors import UsageError

# GPT-2's pre-tokenisation pattern (with ASCII classes standing in for \p{L} / \p{N}).
_PRETOKEN = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+| ?\d+| ?[^\s\w]+|\s+(?!\S)|\s+""")
PRETOKENS = "pretokens"
SHARED_GPT2 = Path(__file__).resolve().parents[3] / "shared" / "data" / "tokenizers" / "gpt2"


class Counter:
    """Counts tokens of many texts at once (batched, so Rust tokenizers run in parallel).

    ``fingerprint``: sha256 of what decides the counts (the whole tokenizer: vocabulary, merges,
    normalizer, pre-tokenizer), so two counters under one name but of other vocabularies differ."""

    def __init__(self, name: str, count_batch, fingerprint: str | None = None):
        self.name = name
        self._count_batch = count_batch
        self.fingerprint = fingerprint or _sha256(name)

    def identity(self) -> dict:
        """What a resumed generation must count with again: name and fingerprint."""
        return {"name": self.name, "sha256": self.fingerprint}

    def count(self, texts: list[str]) -> list[int]:
        return self._count_batch(texts) if texts else []

    def __call__(self, text: str) -> int:
        return self.count([text])[0]

    def __repr__(self) -> str:
        return f"Counter({self.name!r})"


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def pretoken_counter() -> Counter:
    return Counter(PRETOKENS, lambda texts: [len(_PRETOKEN.findall(t)) for t in texts],
                   _sha256(f"{PRETOKENS}:{_PRETOKEN.pattern}"))


def from_tokenizers(tok, name: str) -> Counter:
    """Wrap a ``tokenizers.Tokenizer`` (no special tokens added)."""

    # encode_batch_fast (tokenizers >= 0.20) skips the character offsets: the same ids, ~25% faster.
    encode_batch = getattr(tok, "encode_batch_fast", tok.encode_batch)

    def count_batch(texts):
        return [len(e.ids) for e in encode_batch(texts, add_special_tokens=False)]

    return Counter(name, count_batch, _sha256(tok.to_str()))


def _from_dir(path: Path) -> Counter:
    from tokenizers import Tokenizer  # lazy: the data side is imported by `rmt --help`

    if (path / "tokenizer.json").is_file():
        return from_tokenizers(Tokenizer.from_file(str(path / "tokenizer.json")), str(path))
    if (path / "vocab.json").is_file() and (path / "merges.txt").is_file():
        from tokenizers import ByteLevelBPETokenizer  # lazy: the data side is imported by `rmt --help`

        tok = ByteLevelBPETokenizer(str(path / "vocab.json"), str(path / "merges.txt"))
        return from_tokenizers(tok._tokenizer, str(path))
    raise UsageError(f"tokenizer dir {path} holds neither tokenizer.json nor vocab.json + merges.txt")


def _cached_hub(name: str):
    """A Hub tokenizer's tokenizer.json from the local HF cache, or None (never downloads)."""
    try:
        from huggingface_hub import try_to_load_from_cache  # lazy: the data side is imported by `rmt --help`
    except ImportError:  # pragma: no cover - huggingface_hub ships with datasets
        return None
    found = try_to_load_from_cache(name, "tokenizer.json")
    return Path(found) if isinstance(found, str) else None


def default_gpt2():
    """GPT-2 found offline, or None."""
    env = os.environ.get("RMT_GPT2_TOKENIZER")
    for candidate in ([Path(env)] if env else []) + [SHARED_GPT2]:
        if candidate.is_dir() or candidate.is_file():
            try:
                return get_counter(str(candidate))
            except ValueError:
                continue
    cached = _cached_hub("gpt2")
    if cached is not None:
        from tokenizers import Tokenizer

        return from_tokenizers(Tokenizer.from_file(str(cached)), "gpt2")
    return None


def get_counter(tokenizer=None) -> Counter:
    """A token counter for ``tokenizer`` (see the module doc); one-line ValueError if unusable."""
    if isinstance(tokenizer, Counter):
        return tokenizer
    if tokenizer is None:
        return default_gpt2() or pretoken_counter()
    if isinstance(tokenizer, (str, os.PathLike)):
        spec = str(tokenizer)
        if spec == PRETOKENS:
            return pretoken_counter()
        path = Path(spec).expanduser()
        if path.is_dir():
            return _from_dir(path)
        if path.is_file():
            from tokenizers import Tokenizer

            try:
                return from_tokenizers(Tokenizer.from_file(str(path)), str(path))
            except Exception as exc:
                raise UsageError(f"tokenizer file {path} cannot be read: {str(exc).splitlines()[0]}") from None
        if spec.endswith(".json") or spec.startswith((".", "~", os.sep)):
            raise UsageError(f"tokenizer path not found: {spec}")
        cached = _cached_hub(spec)
        if cached is not None:
            from tokenizers import Tokenizer

            return from_tokenizers(Tokenizer.from_file(str(cached)), spec)
        try:
            from transformers import AutoTokenizer  # lazy: transformers ~2 s; only HF tokenizer names need it

            hf = AutoTokenizer.from_pretrained(spec, local_files_only=True)
        except Exception:
            raise UsageError(
                f"tokenizer {spec!r} cannot be loaded offline (not a local path, not in the Hugging Face "
                f"cache); pass a tokenizer dir/tokenizer.json, '{PRETOKENS}', or download it first"
            ) from None
        return _from_object(hf, spec)
    return _from_object(tokenizer, type(tokenizer).__name__)


def _from_object(tok, name: str) -> Counter:
    from tokenizers import Tokenizer

    if isinstance(tok, Tokenizer):
        return from_tokenizers(tok, name)
    backend = getattr(tok, "backend_tokenizer", None)
    if isinstance(backend, Tokenizer):
        return from_tokenizers(backend, getattr(tok, "name_or_path", None) or name)
    if hasattr(tok, "encode"):  # a slow (Python) HF tokenizer
        vocab = tok.get_vocab() if hasattr(tok, "get_vocab") else {}
        fingerprint = _sha256(f"{type(tok).__name__}:{json.dumps(sorted(vocab.items()))}") if vocab else None
        return Counter(name, lambda texts: [len(tok.encode(t, add_special_tokens=False)) for t in texts], fingerprint)
    raise UsageError(f"tokenizer of type {type(tok).__name__} is not supported; pass a name, a path, "
                     f"a tokenizers.Tokenizer or a transformers tokenizer")
