"""RecurrentMemoryTransformer: the one segment loop for every memory kind (segmenting, padding,
truncated BPTT, streaming, generation, save/load).

How memory is read, written and carried is the memory kind's business (rmt/memory/kinds/: RMT,
RMT-R, ARMT); this module only moves segments and states. The memory state is an explicit value:
``forward``/``stream`` take it in (``memory=``) and hand it back (``.memory``); nothing is cached on
the module between calls.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import torch
import transformers
from safetensors import safe_open
from safetensors.torch import load_model, save_file, save_model
from torch import nn
from torch.nn import functional as F
from transformers.utils import ModelOutput

from rmt.atomic import atomic_file
from rmt.errors import UsageError
from rmt.memory.adapters import DecoderLayers, adapter_for
from rmt.memory.config import RMTConfig
from rmt.memory.diagonal import DIAGONAL_BLOCK, diagonal_unsupported_reason, run_diagonal
from rmt.memory.kinds import MEMORY_KINDS
from rmt.memory.kinds.retrieval import RetrievalStore
from rmt.memory.lora import BaseReference, LoraSettings
from rmt.memory import lora as lora_adapters
from rmt.runs import ADAPTER_WEIGHTS_FILE as ADAPTER_WEIGHTS_NAME, BASE_CONFIG_FILE as BASE_CONFIG_NAME, \
    RMT_CONFIG_FILE as RMT_CONFIG_NAME, WEIGHTS_FILE as WEIGHTS_NAME

FORMAT_VERSION = 2  # 1: v0.1 (memory parameters named `memory`, `retrieval.*`); 2: `memory_kind.*`


@dataclass
class RMTOutput(ModelOutput):
    """HF-style output (attribute and key access). ``loss``: mean over all label tokens (decoders, HF shift) or the classification loss (encoders).
    ``logits``: (batch, seq_len, vocab) aligned with ``input_ids`` (decoders; padding positions are 0),
    or (batch, num_labels) from each row's last segment (encoders).
    ``memory``: the memory state after each row's last segment: RMT / RMT-R a tensor
    (batch, num_mem_tokens, hidden); ARMT an ``ARMTState`` (every layer's A and z).
    ``retrieval_store``: RMT-R only, every memory state written so far (pass it back with ``memory``).
    ``memories``: with ``output_memories=True``, the memory after every segment (for inspection).
    ``write_rate``: gated writes only (``memory_write="gated"``), the mean gate-open probability over
    the segments (in training, ``loss`` includes ``write_sparsity`` times it).
    ``label_logits``: with ``output_logits=False`` and labels (decoders), the logits that were
    computed, as ``(start, logits (batch, w, vocab))`` pieces: positions ``start .. start + w - 1``
    of each row's real tokens (for right-padded rows, the input's own positions). They cover every
    position whose next label is not -100, so answers can be scored without the whole (batch,
    length, vocab) tensor, which for long inputs of a large vocabulary does not fit in memory."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    memory: object = None
    retrieval_store: RetrievalStore | None = None
    memories: tuple | None = None
    write_rate: torch.Tensor | None = None
    label_logits: tuple | None = None


@dataclass
class StreamState:
    """Result of :meth:`RecurrentMemoryTransformer.stream`: the memory after the last segment (as in
    ``RMTOutput.memory``) and the outputs of the last segment only (logits (batch,
    last_segment_len, vocab) for decoders)."""

    memory: object
    logits: torch.Tensor
    retrieval_store: RetrievalStore | None
    n_tokens: int
    n_segments: int


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


def _most_memory(kind_class, adapter, config) -> int:
    """The most memory tokens that leave the base model's learned positions room for one segment
    token (a kind's positions grow with its memory tokens)."""
    import copy

    def fits(m):
        trial = copy.copy(config)
        trial.num_mem_tokens = m
        return kind_class.extra_positions(adapter, trial) < adapter.max_positions

    low, high = 0, config.num_mem_tokens  # fits(high) is False
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low


def _check_token_ids(input_ids, vocab_size: int, name: str = "input_ids") -> torch.Tensor:
    if not isinstance(input_ids, torch.Tensor):
        raise UsageError(f"{name} must be a torch.LongTensor, got {type(input_ids).__name__}")
    if input_ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise UsageError(f"{name} must hold integer token ids, got dtype {input_ids.dtype}")
    if input_ids.dim() == 1:
        input_ids = input_ids[None, :]
    if input_ids.dim() != 2:
        raise UsageError(f"{name} must be 1-D (tokens) or 2-D (batch, tokens), got shape {tuple(input_ids.shape)}")
    if input_ids.numel() == 0:
        raise UsageError(f"{name} is empty (shape {tuple(input_ids.shape)}); give at least one token per row")
    low, high = int(input_ids.min()), int(input_ids.max())
    if low < 0 or high >= vocab_size:
        bad = high if high >= vocab_size else low
        raise UsageError(f"token id {bad} in {name} is outside the vocabulary: allowed 0..{vocab_size - 1}")
    return input_ids.long()


class RecurrentMemoryTransformer(nn.Module):
    """A HF model with recurrent memory (RMT, RMT-R or ARMT: ``config.memory_kind``). Build it with :meth:`wrap`."""

    def __init__(self, base_model: nn.Module, config: RMTConfig, lora: LoraSettings | None = None,
                 base: BaseReference | None = None):
        super().__init__()
        if not isinstance(config, RMTConfig):
            raise UsageError(f"config must be an RMTConfig, got {type(config).__name__}")
        self.adapter = adapter_for(base_model)
        kind_class = MEMORY_KINDS[config.memory_kind]
        kind_class.check_supported(self.adapter, config)
        extra = kind_class.extra_positions(self.adapter, config)
        limit = self.adapter.max_positions
        if limit is not None and extra >= limit:
            raise UsageError(
                f"num_mem_tokens={config.num_mem_tokens} takes {extra} memory/special positions of the base model's {limit}, "
                f"leaving none for segment tokens; allowed num_mem_tokens <= {_most_memory(kind_class, self.adapter, config)}"
            )
        if limit is not None and config.segment_size + extra > limit:
            raise UsageError(
                f"segment_size={config.segment_size} plus {extra} memory/special positions exceeds the base model's "
                f"{limit} positions; allowed segment_size <= {limit - extra}"
            )
        self.config = config
        # Registered before the base model, so parameters() lists the memory first, as v0.1 did
        # (optimizer states of v0.1 RMT runs keep their order).
        self.memory_kind = kind_class(base_model, self.adapter, config)
        self.base_model = base_model
        # LoRA (rmt.memory.lora): adapters injected into the frozen base after the memory is made,
        # so a seed gives the same memory with or without them; ``base`` names the base for saving.
        self.lora, self.base = lora, base
        if lora is not None:
            lora_adapters.attach(base_model, lora)
        # v0.1 checkpoints name the memory parameters without the `memory_kind.` prefix.
        self.register_load_state_dict_pre_hook(_rename_legacy_keys)

    # ----------------------------------------------------------------- construction
    @classmethod
    def wrap(cls, base_model: nn.Module, config: RMTConfig | None = None, lora: LoraSettings | int | None = None,
             base: BaseReference | str | None = None) -> "RecurrentMemoryTransformer":
        """Wrap a supported HF model (GPT-2, Llama, Mistral, Qwen2/3 causal LMs; BERT sequence
        classifiers, RMT and RMT-R only).

        ``lora``: LoRA adapters on the frozen base (a ``LoraSettings``, or a rank): only they and
        the memory's parameters train, and ``save_pretrained`` writes only them plus ``base``, the
        base's name or path (default: where the base was loaded from) and its weights fingerprint.
        ``merge_adapters()`` folds them in for inference."""
        if isinstance(lora, int) and not isinstance(lora, bool):
            lora = LoraSettings(rank=lora) if lora else None
        if isinstance(base, str):
            base = BaseReference.of(base)
        if lora is not None and base is None and getattr(base_model, "name_or_path", ""):
            base = BaseReference.of(base_model.name_or_path)
        return cls(base_model, config if config is not None else RMTConfig(), lora=lora, base=base)

    @property
    def has_adapters(self) -> bool:
        """Whether LoRA adapters are attached and not yet merged (the training form)."""
        return self.lora is not None and lora_adapters.has_adapters(self.base_model)

    def merge_adapters(self) -> "RecurrentMemoryTransformer":
        """Fold the LoRA adapters into the base weights (``rmt.memory.lora.merge``): outputs equal
        up to float rounding, at the cost of the base model alone. A merged model saves whole
        (``save_pretrained`` writes every weight). Returns the model."""
        if self.has_adapters:
            lora_adapters.merge(self.base_model)
        return self

    @property
    def memory(self) -> nn.Parameter:
        """The learned memory tokens (num_mem_tokens, hidden): RMT's initial memory, ARMT's write tokens."""
        return self.memory_kind.memory

    @property
    def retrieval(self):
        """RMT-R's self-retrieval block (None for the other kinds)."""
        return getattr(self.memory_kind, "retrieval", None)

    @property
    def device(self) -> torch.device:
        return self.memory.device

    @property
    def dtype(self) -> torch.dtype:
        return self.memory.dtype

    def initial_memory(self, batch_size: int):
        """What ``memory=None`` means: the ``.memory`` value before the first segment."""
        return self.memory_kind.public(self.memory_kind.initial_state(batch_size))[0]

    def compile_layers(self, **compile_kwargs) -> "RecurrentMemoryTransformer":
        """Opt-in fast path: ``torch.compile`` each decoder layer's MLP in place (its activation,
        GPT-2's seven-operation ``gelu_new`` or Llama's gated SiLU, fused with the bias adds into
        one pass over the MLP's largest tensor; the matmuls stay as they are). Returns the model.

        Results equal the plain model up to float rounding, not bit for bit (the fused activation
        rounds differently; tested at 1e-5 relative). The first segment of each new shape compiles
        (seconds; torch's inductor needs a C++ compiler), so this pays on long streams and training
        runs, not on a few calls. ``compile_kwargs`` go to ``torch.compile``. Decoders only."""
        if not self.adapter.is_decoder:
            raise UsageError(f"compile_layers() is for causal LMs; {type(self.base_model).__name__} is a sequence classifier")
        for layer in DecoderLayers(self.base_model).layers:
            layer.mlp.compile(**compile_kwargs)
        return self

    # ----------------------------------------------------------------- the segment loop
    def _diagonal_unsupported_reason(self) -> str | None:
        if self.has_adapters:  # the stacked layers read the plain weights, not the adapters beside them
            return "the LoRA adapters are not merged into the weights: call model.merge_adapters() first"
        return diagonal_unsupported_reason(self)

    def _use_diagonal(self, diagonal: bool | None, n_segments: int) -> bool:
        """Diagonal batching (ARMT inference): None picks it where it applies (ARMT, no gradient,
        eval mode, more than one segment, a base model diagonal.py supports, adapters merged); True insists."""
        if diagonal is False:
            return False
        reason = self._diagonal_unsupported_reason()
        if diagonal is None:
            return reason is None and n_segments > 1
        if reason is not None:
            raise UsageError(f"diagonal=True is not possible here: {reason}")
        return True

    def _sequential(self, segments, state, logits_from):
        """Segment by segment; yields (logits, state after the segment)."""
        depth = self.config.bptt_depth
        n_segments = len(segments)
        for s, (seg_tokens, seg_lengths) in enumerate(segments):
            # Truncated BPTT: only the last `depth` segments of this call stay in the gradient path
            # through memory; everything that flows into segment n-depth is detached.
            if depth != -1 and 0 < s <= n_segments - depth:
                state = state.detach()
            logits, written = self.memory_kind.segment(self.base_model, state, seg_tokens, seg_lengths, logits_from[s])
            state = written.where(seg_lengths > 0, state)
            yield logits, state

    def _run_segments(self, tokens, lengths, state, logits_from="all", output_memories=False, diagonal=None):
        """The recurrence over compact ``tokens`` (batch, L; row i has ``lengths[i]`` real tokens first).

        Rows are segmented from their own start; a row whose tokens have run out keeps its state
        unchanged, so each row gets exactly what it would get alone. ``logits_from`` says which
        logits to compute: ``"all"``, ``"last"`` (the last segment's only), or one entry per
        segment (a position within the segment to compute its logits from, or None for none).
        Returns (logits, state, states after every segment or None, mean write rate or None);
        decoders' logits are a list of ``(first position, logits (batch, n, vocab))`` pieces, one
        per segment that computed any (see ``_joined``), encoders' the classifier logits.

        The write rate (gated writes, ``RMTState.write_rate``) is averaged over the (row, segment)
        pairs that had tokens: the kind's ``extra_loss`` turns it into a training loss term.
        """
        seg = self.config.segment_size
        n_segments = max(1, math.ceil(int(lengths.max()) / seg))
        segments = [(tokens[:, s * seg : (s + 1) * seg], (lengths - s * seg).clamp(0, seg)) for s in range(n_segments)]
        is_decoder = self.adapter.is_decoder
        if not is_decoder or logits_from == "all":
            logits_from = [0] * n_segments
        elif logits_from == "last":
            logits_from = [None] * (n_segments - 1) + [0]
        if is_decoder and self._use_diagonal(diagonal, n_segments):
            results = run_diagonal(self.memory_kind, self.base_model, state, segments, logits_from, output_memories)
        else:
            results = self._sequential(segments, state, logits_from)
        pieces, memories = [], []
        cls_logits = None
        rate_sum, rate_count = None, 0
        for s, ((_, seg_lengths), (logits, new_state)) in enumerate(zip(segments, results)):
            state = new_state if new_state is not None else state
            rate = getattr(new_state, "write_rate", None)
            if rate is not None:
                active = seg_lengths > 0
                term = torch.where(active, rate, torch.zeros_like(rate)).sum()
                rate_sum = term if rate_sum is None else rate_sum + term
                rate_count += int(active.sum())
            if output_memories:
                memories.append(self.memory_kind.public(state)[0])
            if logits is None:
                continue
            if is_decoder:
                first = logits_from[s]
                if bool((seg_lengths - first < logits.shape[1]).any()):  # zero the padding positions
                    is_pad = torch.arange(first, first + logits.shape[1], device=logits.device)[None, :] >= seg_lengths[:, None]
                    logits = logits.masked_fill(is_pad[:, :, None], 0.0)
                pieces.append((s * seg + first, logits))
            else:
                active = seg_lengths > 0
                cls_logits = logits if cls_logits is None else torch.where(active[:, None], logits, cls_logits)
        write_rate = rate_sum / max(1, rate_count) if rate_sum is not None else None
        return pieces if is_decoder else cls_logits, state, tuple(memories) if output_memories else None, write_rate

    @staticmethod
    def _joined(pieces) -> torch.Tensor:
        """Decoder logits pieces of consecutive segments as one (batch, positions, vocab) tensor."""
        return pieces[0][1] if len(pieces) == 1 else torch.cat([logits for _, logits in pieces], dim=1)

    @staticmethod
    def _next_labels(labels) -> torch.Tensor:
        """What position t's logits predict: label t + 1 (-100 at the last position)."""
        target = torch.full_like(labels, -100)
        target[:, :-1] = labels[:, 1:]
        return target

    @staticmethod
    def _first_labelled(labels, lengths, seg: int, n_segments: int) -> list:
        """Per segment, the first position (within it) whose logits a loss on ``labels`` reads, or
        None: position t is read when label t + 1 is not -100 (compact layout; padding ignored)."""
        target = RecurrentMemoryTransformer._next_labels(labels)
        real = torch.arange(labels.shape[1], device=labels.device)[None, :] + 1 < lengths[:, None]
        read = ((target != -100) & real).any(dim=0).tolist()
        firsts = []
        for s in range(n_segments):
            inside = read[s * seg : (s + 1) * seg]
            firsts.append(inside.index(True) if True in inside else None)
        return firsts

    # ----------------------------------------------------------------- forward
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        memory=None,
        retrieval_store: RetrievalStore | None = None,
        output_memories: bool = False,
        diagonal: bool | None = None,
        output_logits: bool = True,
    ) -> RMTOutput:
        """Process the whole input segment by segment. ``attention_mask`` may pad rows on either side:
        each row is processed from its first real token, exactly as if it were alone. ``memory`` /
        ``retrieval_store``: the ``.memory`` / ``.retrieval_store`` of an earlier call, to continue
        it. ``diagonal``: ARMT inference schedule (None: diagonal batching where it applies, see
        diagonal.py; False: segment by segment; True: diagonal or a ValueError).

        ``output_logits=False`` (decoders): ``.logits`` is None, and only the logits the loss reads
        are computed (the positions before a label that is not -100), with nothing that only the
        others need (the last layer's MLP of those rows). Training with labels on a few positions
        (BABILong answers) then skips the output layer almost everywhere; the loss equals the one
        with ``output_logits=True`` up to the order of its sum."""
        input_ids = _check_token_ids(input_ids, self.adapter.vocab_size).to(self.device)
        batch, total = input_ids.shape
        if attention_mask is not None:
            if not isinstance(attention_mask, torch.Tensor) or attention_mask.dim() == 1 and batch == 1:
                attention_mask = torch.as_tensor(attention_mask).reshape(1, -1)
            if tuple(attention_mask.shape) != (batch, total):
                raise UsageError(f"attention_mask must have the shape of input_ids {(batch, total)}, got {tuple(attention_mask.shape)}")
            valid = attention_mask.to(self.device) != 0
            if bool(valid.all()):
                attention_mask = None
        if attention_mask is not None:
            lengths = valid.sum(dim=1)
            if bool((lengths == 0).any()):
                row = int((lengths == 0).nonzero()[0])
                raise UsageError(f"row {row} of the batch is empty (its attention_mask is all 0); give at least one token per row")
            # Compact: each row's real tokens first, in order (stable sort puts valid positions first).
            order = torch.argsort((~valid).to(torch.int8), dim=1, stable=True)
            compact = input_ids.gather(1, order)
        else:
            valid, order = None, None
            lengths = torch.full((batch,), total, dtype=torch.long, device=self.device)
            compact = input_ids
        longest = int(lengths.max())
        compact = compact[:, :longest]
        state = self.memory_kind.state_from(memory, retrieval_store, batch)
        is_decoder = self.adapter.is_decoder

        compact_labels = None
        if labels is not None:
            labels = labels.to(self.device)
            if is_decoder:
                if tuple(labels.shape) != (batch, total):
                    raise UsageError(f"labels must have the shape of input_ids {(batch, total)}, got {tuple(labels.shape)}")
                compact_labels = self._compact_labels(labels, order, lengths, longest)
        logits_from = "all"
        if is_decoder and not output_logits:
            n_segments = max(1, math.ceil(longest / self.config.segment_size))
            logits_from = [None] * n_segments if compact_labels is None else \
                self._first_labelled(compact_labels, lengths, self.config.segment_size, n_segments)

        logits, state, memories, write_rate = self._run_segments(compact, lengths, state, logits_from=logits_from,
                                                                 output_memories=output_memories, diagonal=diagonal)
        memory, store = self.memory_kind.public(state)

        pieces = None
        if is_decoder:  # the pieces of output_logits=False, or all the logits joined
            pieces, logits = (None, self._joined(logits)) if output_logits else (logits, None)
        loss = None
        if labels is not None:
            if not is_decoder:
                loss = self._classification_loss(logits, labels)
            elif output_logits:
                loss = self._lm_loss(logits, compact_labels)
            else:
                loss = self._lm_loss_on_pieces(pieces, compact_labels, self.adapter.vocab_size)
            extra = self.memory_kind.extra_loss(write_rate) if self.training else None
            if extra is not None:  # e.g. gated writes: the pressure that shuts unneeded gates (RMTKind.write)
                loss = loss + extra
        if is_decoder and output_logits and order is not None:
            # Back to the caller's layout (logits at padding positions are 0).
            full = logits.new_zeros(batch, total, logits.shape[-1])
            full[:, :longest] = logits
            right_padded = bool((order == torch.arange(total, device=order.device)).all())
            logits = full if right_padded else torch.zeros_like(full).scatter(1, order[:, :, None].expand_as(full), full)
        if not output_logits:
            logits = None
        label_logits = tuple(pieces) if pieces is not None and compact_labels is not None else None
        return RMTOutput(loss=loss, logits=logits, memory=memory, retrieval_store=store, memories=memories,
                         write_rate=write_rate, label_logits=label_logits)

    @staticmethod
    def _compact_labels(labels, order, lengths, longest):
        """``labels`` in the compact layout of ``forward`` (each row's real positions first), -100 at padding."""
        if order is None:
            return labels
        labels = labels.gather(1, order)[:, :longest]
        pad = torch.arange(longest, device=labels.device)[None, :] >= lengths[:, None]
        return labels.masked_fill(pad, -100)

    @staticmethod
    def _lm_loss(logits, labels):
        """HF causal-LM loss over the whole (compacted) sequence: token t predicts label t+1, across
        segment boundaries; -100 and padding are ignored; mean over all label tokens (0, with no
        gradient, when there is none: a mean over nothing would be NaN)."""
        shift_logits = logits[:, :-1].float()
        shift_labels = labels[:, 1:]
        total = F.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1),
                                ignore_index=-100, reduction="sum")
        return total / (shift_labels != -100).sum().clamp(min=1)

    @staticmethod
    def _lm_loss_on_pieces(pieces, labels, vocab_size: int):
        """``_lm_loss`` from the logits pieces of ``output_logits=False`` (the positions it reads):
        summed piece by piece, each small enough to stay in cache, and divided by the label count
        (no (batch, length, vocab) tensor is joined, shifted or copied)."""
        target = RecurrentMemoryTransformer._next_labels(labels)
        total, count = None, 0
        for start, logits in pieces:
            t = target[:, start : start + logits.shape[1]]
            keep = t != -100
            n = int(keep.sum())
            if n == 0:
                continue
            rows = logits[keep] if n < keep.numel() else logits.reshape(-1, logits.shape[-1])
            piece = F.cross_entropy(rows.float(), t[keep] if n < keep.numel() else t.reshape(-1), reduction="sum")
            total = piece if total is None else total + piece
            count += n
        if total is None:  # no label at all: 0 (not the NaN of a mean over nothing); backward adds no gradient
            return torch.zeros((), device=labels.device, requires_grad=True)
        return total / count

    def _classification_loss(self, logits, labels):
        """Same rules as HF's *ForSequenceClassification (problem_type from the base config)."""
        cfg = self.base_model.config
        num_labels = logits.shape[-1]
        problem = cfg.problem_type
        if problem is None:
            if num_labels == 1:
                problem = "regression"
            elif labels.dtype in (torch.long, torch.int):
                problem = "single_label_classification"
            else:
                problem = "multi_label_classification"
        if problem == "regression":
            return F.mse_loss(logits.squeeze(-1).float(), labels.squeeze(-1).float())
        if problem == "single_label_classification":
            if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_labels):
                raise UsageError(f"class label outside 0..{num_labels - 1}: got {labels.tolist()}")
            return F.cross_entropy(logits.float().view(-1, num_labels), labels.view(-1))
        return F.binary_cross_entropy_with_logits(logits.float(), labels.float())

    # ----------------------------------------------------------------- streaming
    @torch.no_grad()
    def stream(self, chunks: Iterable[torch.Tensor], memory=None, retrieval_store: RetrievalStore | None = None,
               diagonal: bool | None = None) -> StreamState:
        """Read any number of token chunks (1-D, or 2-D with a fixed batch size) segment by segment,
        carrying only the memory state: peak memory does not grow with the total length (RMT-R's
        store excepted, which grows by num_mem_tokens vectors per segment). Returns the final memory
        and the last segment's logits; equal to ``forward`` on the concatenated input.

        A full segment runs as soon as a token after it has arrived (so the last segment, whose
        logits are returned, is known to be the last: no other segment computes logits); with
        diagonal batching (ARMT, see ``forward``) up to ``DIAGONAL_BLOCK`` segments per layer are
        buffered and run as one block."""
        seg = self.config.segment_size
        block = 1
        if diagonal is not False:
            reason = self._diagonal_unsupported_reason()
            if reason is None:
                block = DIAGONAL_BLOCK * len(DecoderLayers(self.base_model))
            elif diagonal:
                raise UsageError(f"diagonal=True is not possible here: {reason}")
        pending: list[torch.Tensor] = []
        pending_len = 0
        batch = None
        result = {"state": None, "logits": None, "segments": 0, "tokens": 0}

        def run(tokens, last):
            lengths = torch.full((tokens.shape[0],), tokens.shape[1], dtype=torch.long, device=self.device)
            n_segments = math.ceil(tokens.shape[1] / seg)
            logits, result["state"], _, _ = self._run_segments(tokens, lengths, result["state"],
                                                               logits_from="last" if last else [None] * n_segments,
                                                               diagonal=diagonal)
            if last:
                result["logits"] = logits[-1][1] if self.adapter.is_decoder else logits
            result["segments"] += n_segments

        for chunk in chunks:
            if isinstance(chunk, torch.Tensor) and chunk.numel() == 0:
                continue
            chunk = _check_token_ids(chunk, self.adapter.vocab_size, name="stream chunk").to(self.device)
            if batch is None:
                batch = chunk.shape[0]
                result["state"] = self.memory_kind.state_from(memory, retrieval_store, batch)
            elif chunk.shape[0] != batch:
                raise UsageError(f"all stream chunks must have the same batch size {batch}, got a chunk of shape {tuple(chunk.shape)}")
            pending.append(chunk)
            pending_len += chunk.shape[1]
            result["tokens"] += chunk.shape[1]
            if pending_len > block * seg:
                buffered = torch.cat(pending, dim=1)
                n_full = (buffered.shape[1] - 1) // seg  # at least one token stays: these segments are not the last
                run(buffered[:, : n_full * seg], last=False)
                rest = buffered[:, n_full * seg :]
                pending, pending_len = [rest], rest.shape[1]
        if batch is None:
            raise UsageError("stream got no tokens: the chunks are empty")
        run(torch.cat(pending, dim=1), last=True)
        memory, store = self.memory_kind.public(result["state"])
        return StreamState(memory, result["logits"], store, result["tokens"], result["segments"])

    # ----------------------------------------------------------------- generation
    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        max_new_tokens: int = 5,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: int | None = None,
        eos_token_id: int | list[int] | None = None,
        generator: torch.Generator | None = None,
        diagonal: bool | None = None,
    ) -> torch.Tensor:
        """Read the context through memory, then decode; returns only the new tokens (batch, <= max_new_tokens).

        Token t is exactly what the argmax (or sample) of ``forward(context + new[:t]).logits[:, -1]``
        would give: the context's full segments go through memory in one batched pass, then all rows
        decode in lock-step inside their current segments with one KV cache, writing memory and
        opening a new segment whenever a row's current one fills up. Rows that stop early (eos) are padded with the eos id
        (else the base config's pad_token_id, else 0). ``diagonal``: how ARMT reads the context (see ``forward``).
        """
        if not self.adapter.is_decoder:
            raise UsageError(f"generate() needs a causal LM; {type(self.base_model).__name__} is a sequence classifier")
        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise UsageError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
        if do_sample and not temperature > 0:
            raise UsageError(f"temperature must be > 0 when sampling, got {temperature!r}")
        if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
            raise UsageError(f"top_k must be None or an integer >= 1, got {top_k!r}")
        eos_ids = set([eos_token_id] if isinstance(eos_token_id, int) else (eos_token_id or []))
        input_ids = _check_token_ids(input_ids, self.adapter.vocab_size).to(self.device)
        batch, total = input_ids.shape
        if attention_mask is None:
            valid = torch.ones_like(input_ids, dtype=torch.bool)
        else:
            if tuple(attention_mask.shape) != (batch, total):
                raise UsageError(f"attention_mask must have the shape of input_ids {(batch, total)}, got {tuple(attention_mask.shape)}")
            valid = attention_mask.to(self.device) != 0
        rows = [input_ids[i][valid[i]] for i in range(batch)]
        for i, row in enumerate(rows):
            if row.numel() == 0:
                raise UsageError(f"row {i} of the batch is empty (its attention_mask is all 0); give at least one token per row")

        seg = self.config.segment_size
        # 1. Every full segment before each row's current (last, possibly partial) one, batched.
        full_lengths = torch.tensor([((r.numel() - 1) // seg) * seg for r in rows], device=self.device)
        state = self.memory_kind.initial_state(batch)
        if int(full_lengths.max()) > 0:
            longest = int(full_lengths.max())
            padded = torch.zeros(batch, longest, dtype=torch.long, device=self.device)
            for i, r in enumerate(rows):
                padded[i, : full_lengths[i]] = r[: full_lengths[i]]
            n_full = math.ceil(int(full_lengths.max()) / seg)
            _, state, _, _ = self._run_segments(padded, full_lengths, state, logits_from=[None] * n_full, diagonal=diagonal)

        # 2. All rows together: decode within each row's current segment.
        currents = [row[int(full_lengths[i]) :].tolist() for i, row in enumerate(rows)]
        outputs = self._decode(state, currents, max_new_tokens, do_sample, temperature, top_k, eos_ids, generator)
        pad = next(iter(eos_ids)) if eos_ids else (getattr(self.base_model.config, "pad_token_id", None) or 0)
        width = max(len(o) for o in outputs)
        result = torch.full((batch, width), pad, dtype=torch.long, device=self.device)
        for i, o in enumerate(outputs):
            result[i, : len(o)] = torch.tensor(o, dtype=torch.long, device=self.device)
        return result

    def _pick(self, logits, do_sample, temperature, top_k, generator):
        """Next token per row from logits (batch, vocab)."""
        logits = logits.float()
        if not do_sample:
            return logits.argmax(-1)
        logits = logits / temperature
        if top_k is not None and top_k < logits.shape[-1]:
            threshold = torch.topk(logits, top_k, dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < threshold, float("-inf"))
        return torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator)[:, 0]

    def _decode(self, state, currents, max_new_tokens, do_sample, temperature, top_k, eos_ids, generator):
        """Decode all rows in lock-step inside their current segments with one KV cache.

        ``currents[i]``: row i's tokens in its current segment (1..segment_size). The memory kind
        prefills the cache with the current tokens of every row, reading ``state`` (rows padded and
        masked, positions per row), and each step appends one token per row. When a row's segment
        is full and it needs another token, its state is written (an ordinary segment pass, as in
        ``forward``), the token opens its next segment, and the cache is rebuilt for all rows.
        """
        seg = self.config.segment_size
        kind, base, device = self.memory_kind, self.base_model, self.device
        batch = len(currents)

        def padded(rows_tokens):
            lengths = torch.tensor([len(c) for c in rows_tokens], device=device)
            ids = torch.zeros(batch, max(1, int(lengths.max())), dtype=torch.long, device=device)
            for i, c in enumerate(rows_tokens):
                ids[i, : len(c)] = torch.tensor(c, dtype=torch.long, device=device)
            return ids, lengths

        decoding = kind.start_decoding(base, state, *padded(currents))
        outputs = [[] for _ in range(batch)]
        done = [False] * batch
        for step in range(max_new_tokens):
            tokens = self._pick(decoding.logits, do_sample, temperature, top_k, generator).tolist()
            for i, token in enumerate(tokens):
                if not done[i]:
                    outputs[i].append(token)
                    done[i] = token in eos_ids
            if all(done) or step == max_new_tokens - 1:
                break
            full = [len(c) == seg for c in currents]
            if any(full):
                # Write the state of the rows whose segment is full (the others pass no tokens and
                # keep theirs); the new token opens their next segment.
                ids, lengths = padded([c if f else [] for c, f in zip(currents, full)])
                _, written = kind.segment(base, state, ids, lengths, logits_from=None)
                state = written.where(lengths > 0, state)
                for i, token in enumerate(tokens):
                    currents[i] = [token] if full[i] else currents[i] + [token]
                decoding = kind.start_decoding(base, state, *padded(currents))
            else:
                for i, token in enumerate(tokens):
                    currents[i].append(token)
                decoding = kind.decode_step(base, state, decoding, torch.tensor(tokens, device=device))
        return outputs

    # ----------------------------------------------------------------- save / load
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
        if stale.is_file():  # written by this method earlier (rmt_config.json says which one is current)
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
            raise FileNotFoundError(f"RMT checkpoint directory not found: {path}")

        def read_json(name):
            try:
                return json.loads((path / name).read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise UsageError(f"corrupt checkpoint file {path / name}: {exc}") from None

        for name in (RMT_CONFIG_NAME, BASE_CONFIG_NAME):
            if not (path / name).is_file():
                raise FileNotFoundError(f"{path} is not an RMT checkpoint: missing {name} (expected {RMT_CONFIG_NAME}, {BASE_CONFIG_NAME}, {WEIGHTS_NAME})")
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
        from rmt.runs import load_causal_lm  # the one loader of base models (rmt.models)

        weights = path / ADAPTER_WEIGHTS_NAME
        if not weights.is_file():
            raise FileNotFoundError(f"{path} is an RMT checkpoint with adapters but has no {ADAPTER_WEIGHTS_NAME}")
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
            raise FileNotFoundError(f"{path} is not an RMT checkpoint: missing {WEIGHTS_NAME} (expected {RMT_CONFIG_NAME}, {BASE_CONFIG_NAME}, {WEIGHTS_NAME})")
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
