"""LoRA adapters on a frozen base model, through ``peft``: what they are, how they are attached,
which tensors a run with them trains (and so saves), and how they are folded in for inference.

A model with memory and LoRA trains two things: the memory kind's own parameters
(``memory_kind.*``: memory tokens, write gates, ARMT's projections, RMT-R's block) and peft's
``lora_A`` / ``lora_B`` matrices injected into the base model's linear layers. Every base weight,
the embeddings included, stays frozen; so a run or checkpoint of such a model holds only those
tensors plus a reference to its base (name and weights fingerprint, ``BaseReference``): a few MB
for SmolLM2-135M, where the whole model is 540 MB.

For inference (evaluation, serving, streaming) the adapters are merged into the base weights
(``merge``): the model then costs what its base costs, and the diagonal schedule, which stacks the
plain layer weights, applies again.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from torch import nn

from rmt.errors import UsageError
from rmt.fingerprint import weights_fingerprint
from rmt.models import resolve

LORA_MARKER = "lora_"  # peft's adapter tensors: ...q_proj.lora_A.default.weight, ...lora_B...
MEMORY_PREFIX = "memory_kind."  # the memory kind's parameters in a RecurrentMemoryTransformer


@dataclass(frozen=True)
class LoraSettings:
    """The adapters: rank ``rank`` (> 0), scale ``alpha / rank``, dropout on their input, and the
    base model's modules that get one (``targets``: module name suffixes as peft matches them,
    e.g. ``("q_proj", "v_proj")``; empty: every linear layer of the decoder blocks, peft's
    ``all-linear``, which leaves the output layer out)."""

    rank: int
    alpha: float = 32.0
    dropout: float = 0.0
    targets: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self):
        if not (isinstance(self.rank, int) and not isinstance(self.rank, bool) and self.rank >= 1):
            raise UsageError(f"lora rank must be an integer >= 1 (0: no adapters, full fine-tuning), got {self.rank!r}")
        if not (isinstance(self.alpha, (int, float)) and not isinstance(self.alpha, bool) and self.alpha > 0):
            raise UsageError(f"lora alpha must be a number > 0, got {self.alpha!r}")
        if not (isinstance(self.dropout, (int, float)) and not isinstance(self.dropout, bool) and 0 <= self.dropout < 1):
            raise UsageError(f"lora dropout must be a number in [0, 1), got {self.dropout!r}")
        object.__setattr__(self, "alpha", float(self.alpha))
        object.__setattr__(self, "dropout", float(self.dropout))
        object.__setattr__(self, "targets", tuple(self.targets or ()))

    def to_dict(self) -> dict:
        return {**asdict(self), "targets": list(self.targets)}

    @classmethod
    def from_dict(cls, data: dict) -> "LoraSettings":
        return cls(rank=data["rank"], alpha=data["alpha"], dropout=data["dropout"], targets=tuple(data.get("targets") or ()))


@dataclass(frozen=True)
class BaseReference:
    """The frozen base an adapter was trained on: the name or path it was loaded from (what
    ``rmt.models.resolve`` takes: a registered name such as ``smollm2-135m``, a hub name, an
    absolute path) and the content fingerprint of its weights (``rmt.fingerprint``; None when it
    could not be computed, e.g. a hub model not in the local cache)."""

    name: str
    fingerprint: str | None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "BaseReference":
        return cls(name=str(data["name"]), fingerprint=data.get("fingerprint"))

    @classmethod
    def of(cls, spec) -> "BaseReference":
        """The reference of the base ``spec`` names (a model name, or a path: kept absolute, so
        the run loads from any working directory), with its fingerprint as it is now."""
        path = Path(str(spec)).expanduser()
        name = str(path.resolve()) if path.exists() else str(spec)
        return cls(name, weights_fingerprint(resolve(name)))

    def locate(self, where: str) -> str:
        """What ``from_pretrained`` reads for this base: the name resolved (``rmt.models.resolve``),
        after checking that its weights are the ones the adapter was trained on (``where``: the
        adapter's dir, named in the errors)."""
        try:
            found = resolve(self.name)
        except UsageError as exc:
            raise UsageError(f"{where} is an adapter on the base model {self.name!r}, which cannot be loaded here: {exc}") from None
        if self.fingerprint is not None:
            now = weights_fingerprint(found)
            if now != self.fingerprint:
                raise UsageError(f"{where} is an adapter on the base model {self.name!r} with weights {self.fingerprint}, "
                                 f"but {found} now has weights {now}: an adapter on other weights is a different "
                                 f"model; give it the base it was trained on")
        return found


def _tuner_layers(module: nn.Module):
    from peft.tuners.tuners_utils import BaseTunerLayer  # peft imports lazily: `rmt --help` stays fast

    return [(name, m) for name, m in module.named_modules() if isinstance(m, BaseTunerLayer)]


def attach(base_model: nn.Module, settings: LoraSettings) -> nn.Module:
    """Inject fresh LoRA adapters into ``base_model`` in place (peft's ``inject_adapter_in_model``:
    the model keeps its class, its modules their names) and freeze every other base weight.
    Fresh adapters change nothing: peft starts ``lora_B`` at zero."""
    from peft import LoraConfig, inject_adapter_in_model

    if _tuner_layers(base_model):
        raise UsageError("the base model already has adapters; attach LoRA to a plain model")
    # GPT-2's linear layers are Conv1D (weights stored transposed): peft must be told, or it warns and guesses.
    from transformers.pytorch_utils import Conv1D

    transposed = any(isinstance(m, Conv1D) for m in base_model.modules())
    config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=list(settings.targets) if settings.targets else "all-linear",
                        fan_in_fan_out=transposed)
    try:
        inject_adapter_in_model(config, base_model)
    except ValueError as exc:  # peft: a target that matches no module
        names = sorted({name.rsplit(".", 1)[-1] for name, m in base_model.named_modules() if _is_linear(m)})
        raise UsageError(f"--lora-targets {','.join(settings.targets)}: {' '.join(str(exc).split())[:200]}; "
                         f"this model's linear layers: {', '.join(names)}") from None
    for name, p in base_model.named_parameters():
        p.requires_grad_(LORA_MARKER in name)
    return base_model


def _is_linear(module) -> bool:
    from transformers.pytorch_utils import Conv1D  # GPT-2's linear layers

    return isinstance(module, (nn.Linear, Conv1D))


def has_adapters(module: nn.Module) -> bool:
    """Whether ``module`` holds LoRA layers that are not folded in (training form)."""
    return bool(_tuner_layers(module))


def trained_state_dict(model: nn.Module) -> dict:
    """What a run with adapters trains, and so all it saves: the LoRA matrices and the memory
    kind's parameters (names as in ``model.state_dict()``)."""
    return {name: tensor for name, tensor in model.state_dict().items()
            if LORA_MARKER in name or name.startswith(MEMORY_PREFIX)}


def merge(base_model: nn.Module) -> nn.Module:
    """Fold every LoRA adapter into its base layer's weight and put the plain layer back (peft's
    merge, then the unload step of ``merge_and_unload``): same outputs up to float rounding, the
    cost and module layout of the base model. In place; returns the model."""
    for name, layer in _tuner_layers(base_model):
        layer.merge()
        parent_name, _, child = name.rpartition(".")
        parent = base_model.get_submodule(parent_name) if parent_name else base_model
        setattr(parent, child, layer.get_base_layer())
    return base_model
