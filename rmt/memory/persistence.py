"""Saving and loading ``RecurrentMemoryTransformer`` model dirs (``save_pretrained`` /
``from_pretrained`` / ``load_trained``): a whole model, or LoRA adapters with the memory's parameters
on a frozen base named by its weights fingerprint; v0.1 checkpoints' parameter names. The file names
are ``rmt.runs``'.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import transformers
from safetensors import safe_open
from safetensors.torch import load_model, save_file, save_model

from rmt.atomic import atomic_file
from rmt.errors import UsageError
from rmt.memory import lora as lora_adapters
from rmt.memory.config import RMTConfig
from rmt.memory.lora import BaseReference, LoraSettings
from rmt.runs import load_causal_lm  # the one loader of base models (rmt.models)
from rmt.runs import ADAPTER_WEIGHTS_FILE as ADAPTER_WEIGHTS_NAME, BASE_CONFIG_FILE as BASE_CONFIG_NAME, \
    RMT_CONFIG_FILE as RMT_CONFIG_NAME, WEIGHTS_FILE as WEIGHTS_NAME

FORMAT_VERSION = 2  # 1: v0.1 (memory parameters named `memory`, `retrieval.*`); 2: `memory_kind.*`


def _current_key(name: str) -> str:
    """A parameter name of a v0.1 checkpoint (``memory``, ``retrieval.*``) in today's model."""
    if name == "memory" or name.startswith("retrieval."):
        return "memory_kind." + name
    return name


def _rename_legacy_keys(module, state_dict, prefix, *args):
    for key in [k for k in state_dict if k.startswith(prefix)]:
        new = prefix + _current_key(key[len(prefix) :])
        if new != key:
            state_dict[new] = state_dict.pop(key)


class Persistence:
    """``RecurrentMemoryTransformer``'s save and load (a mixin: it reads the model's ``config``,
    ``base_model``, ``lora`` / ``base`` and ``has_adapters``)."""

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """Write ``config.json`` (base HF config), ``rmt_config.json`` and ``model.safetensors`` (base
        weights + the memory kind's parameters) into ``path``; each file is written to a temp file then renamed,
        so a crash never leaves a half-written checkpoint file. Other files in ``path`` (a tokenizer) are kept.

        With LoRA adapters not merged (``wrap(..., lora=)``), only what trains is written, as
        ``adapter_model.safetensors`` (the adapters and the memory's parameters), and
        ``rmt_config.json`` names the frozen base and its weights fingerprint: a few MB, never the
        base's weights. ``from_pretrained`` loads the base by that name and checks the fingerprint."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        ours = (path / RMT_CONFIG_NAME).is_file()  # a model dir this method wrote before
        base_config = self.base_model.config.to_dict()
        base_config["architectures"] = [type(self.base_model).__name__]
        rmt_config = {"rmt_config": self.config.to_dict(), "base_model_class": type(self.base_model).__name__,
                      "format_version": FORMAT_VERSION}
        adapters = self.has_adapters
        if adapters:
            if self.base is None:
                raise UsageError("saving LoRA adapters needs the base model's name or path, to load them onto it "
                                 "again: wrap(base_model, config, lora=..., base=NAME_OR_PATH)")
            rmt_config["adapter"] = {"lora": self.lora.to_dict(), "base": self.base.to_dict()}

        def write_json(data):
            return lambda tmp: Path(tmp).write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")

        if adapters:
            trained = {k: v.detach().contiguous() for k, v in lora_adapters.trained_state_dict(self).items()}
            atomic_file(path / ADAPTER_WEIGHTS_NAME, lambda tmp: save_file(trained, tmp, metadata={"format": "pt"}))
            stale = path / WEIGHTS_NAME  # a whole model saved here before would be read instead
        else:
            atomic_file(path / WEIGHTS_NAME, lambda tmp: save_model(self, tmp, metadata={"format": "pt"}))
            stale = path / ADAPTER_WEIGHTS_NAME
        atomic_file(path / BASE_CONFIG_NAME, write_json(base_config))
        atomic_file(path / RMT_CONFIG_NAME, write_json(rmt_config))
        if ours and stale.is_file():  # this method's own earlier save: rmt_config.json now says which file is current
            stale.unlink()

    def load_trained(self, weights: str | os.PathLike) -> None:
        """Load an ``adapter_model.safetensors`` (what a run with adapters trained) into this model,
        which must have the same adapters attached: every trained tensor must be in the file with
        its shape, and nothing else may be (one ``UsageError`` line otherwise)."""
        weights = Path(weights)
        expected = lora_adapters.trained_state_dict(self)
        try:
            with safe_open(str(weights), framework="pt") as f:
                saved = {key: f.get_tensor(key) for key in f.keys()}
        except Exception as exc:
            raise UsageError(f"corrupt checkpoint weights {weights}: {' '.join(str(exc).split())}") from None
        missing, unexpected = sorted(set(expected) - set(saved)), sorted(set(saved) - set(expected))
        if missing or unexpected:
            raise UsageError(f"adapter weights {weights} do not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
        for key, value in saved.items():
            if tuple(value.shape) != tuple(expected[key].shape):
                raise UsageError(f"adapter weights {weights} do not match the model: {key} has shape {tuple(value.shape)}, "
                                 f"the model expects {tuple(expected[key].shape)}")
        self.load_state_dict(saved, strict=False)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str | torch.device | None = None,
                        dtype: torch.dtype | None = None, merge_adapters: bool = True) -> "RecurrentMemoryTransformer":
        """Rebuild the base model from the saved config, wrap it and load all weights.

        A dir saved with LoRA adapters (``adapter_model.safetensors``) loads its base by the name
        it records (``rmt.models.resolve``: a registered name, hub name or path), after checking the
        base's weights fingerprint against the recorded one (one ``UsageError`` line when it
        differs), attaches the adapters and loads them; ``merge_adapters`` (default) then folds them
        into the weights for inference. ``merge_adapters=False`` keeps them apart, to train further."""
        path = Path(path)
        if not path.is_dir():
            raise UsageError(f"RMT checkpoint directory not found: {path}")

        def read_json(name):
            try:
                return json.loads((path / name).read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise UsageError(f"corrupt checkpoint file {path / name}: {exc}") from None

        for name in (RMT_CONFIG_NAME, BASE_CONFIG_NAME):
            if not (path / name).is_file():
                raise UsageError(f"{path} is not an RMT checkpoint: missing {name} (expected {RMT_CONFIG_NAME}, {BASE_CONFIG_NAME}, {WEIGHTS_NAME})")
        meta = read_json(RMT_CONFIG_NAME)
        if not isinstance(meta, dict) or "rmt_config" not in meta or "base_model_class" not in meta:
            raise UsageError(f"corrupt checkpoint file {path / RMT_CONFIG_NAME}: expected keys rmt_config and base_model_class")
        config = RMTConfig.from_dict(meta["rmt_config"])
        if "adapter" in meta:
            model = cls._from_adapter_dir(path, meta, config)
            if merge_adapters:
                model.merge_adapters()
        else:
            model = cls._from_whole_dir(path, meta, config, read_json(BASE_CONFIG_NAME))
        model.eval()
        if device is not None or dtype is not None:
            model.to(device=device, dtype=dtype)
        return model

    @classmethod
    def _from_adapter_dir(cls, path: Path, meta: dict, config: RMTConfig) -> "RecurrentMemoryTransformer":
        """Base (by name, fingerprint checked) + adapters + the memory's parameters."""
        weights = path / ADAPTER_WEIGHTS_NAME
        if not weights.is_file():
            raise UsageError(f"{path} is an RMT checkpoint with adapters but has no {ADAPTER_WEIGHTS_NAME}")
        try:
            lora = LoraSettings.from_dict(meta["adapter"]["lora"])
            base = BaseReference.from_dict(meta["adapter"]["base"])
        except (KeyError, TypeError) as exc:
            raise UsageError(f"corrupt checkpoint file {path / RMT_CONFIG_NAME}: its adapter entry lacks {exc}") from None
        base_model = load_causal_lm(base.locate(str(path)))
        if type(base_model).__name__ != meta["base_model_class"]:
            raise UsageError(f"{path} is an adapter on a {meta['base_model_class']}, but {base.name!r} loads a "
                             f"{type(base_model).__name__}")
        model = cls(base_model, config, lora=lora, base=base)
        model.load_trained(weights)
        return model

    @classmethod
    def _from_whole_dir(cls, path: Path, meta: dict, config: RMTConfig, base_dict: dict) -> "RecurrentMemoryTransformer":
        """Every weight from ``model.safetensors``, the base built from its saved config."""
        weights = path / WEIGHTS_NAME
        if not weights.is_file():
            raise UsageError(f"{path} is not an RMT checkpoint: missing {WEIGHTS_NAME} (expected {RMT_CONFIG_NAME}, {BASE_CONFIG_NAME}, {WEIGHTS_NAME})")
        class_name = meta["base_model_class"]
        model_class = getattr(transformers, str(class_name), None)
        if model_class is None or not hasattr(model_class, "config_class"):
            raise UsageError(f"checkpoint names an unknown base model class {class_name!r}")
        try:
            base_config = model_class.config_class.from_dict(base_dict)
        except Exception as exc:  # a config that HF cannot parse is a corrupt checkpoint
            raise UsageError(f"corrupt checkpoint file {path / BASE_CONFIG_NAME}: {' '.join(str(exc).split())}") from None
        try:
            with safe_open(str(weights), framework="pt") as f:
                keys = list(f.keys())
                saved_dtype = f.get_slice(keys[0]).get_dtype() if keys else None
                saved_shapes = {_current_key(key): tuple(f.get_slice(key).get_shape()) for key in keys}
        except Exception as exc:
            raise UsageError(f"corrupt checkpoint weights {weights}: {' '.join(str(exc).split())}") from None
        base_model = model_class(base_config)
        model = cls(base_model, config)
        torch_dtype = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}.get(saved_dtype)
        if torch_dtype is not None:
            model.to(torch_dtype)
        expected_shapes = {key: tuple(value.shape) for key, value in model.state_dict().items()}
        for key, shape in saved_shapes.items():
            if key not in expected_shapes:
                raise UsageError(f"checkpoint weights {weights} do not match the model: unexpected tensor {key}")
            if shape != expected_shapes[key]:
                raise UsageError(f"checkpoint weights {weights} do not match the model: {key} has shape {shape}, the model expects {expected_shapes[key]}")
        try:
            missing, unexpected = load_model(model, str(weights), strict=False)
        except Exception as exc:
            raise UsageError(f"corrupt checkpoint weights {weights}: {' '.join(str(exc).split())}") from None
        if missing or unexpected:
            raise UsageError(f"checkpoint weights {weights} do not match the model: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")
        return model
