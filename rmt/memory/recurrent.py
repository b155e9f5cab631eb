"""RecurrentMemoryTransformer: the one segment loop for every memory kind (segmenting, padding,
truncated BPTT) and ``forward``. Beside it: ``generation.py`` (``stream``, ``generate``),
``persistence.py`` (``save_pretrained``, ``from_pretrained``, ``load_trained``), ``losses.py`` (the
losses ``forward`` computes), ``token_ids.py`` (the input check).

How memory is read, written and carried is the memory kind's business (rmt/memory/kinds/: RMT,
RMT-R, ARMT); this module only moves segments and states. The memory state is an explicit value:
``forward``/``stream`` take it in (``memory=``) and hand it back (``.memory``); nothing is cached on
the module between calls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from transformers.utils import ModelOutput

from rmt.errors import UsageError
from rmt.memory import losses
from rmt.memory import lora as lora_adapters
from rmt.memory.adapters import DecoderLayers, adapter_for
from rmt.memory.config import RMTConfig
from rmt.memory.generation import Generation, StreamState  # noqa: F401  (StreamState: stream's result)
from rmt.memory.kinds import MEMORY_KINDS
from rmt.memory.kinds.retrieval import RetrievalStore
from rmt.memory.lora import BaseReference, LoraSettings
from rmt.memory.persistence import Persistence, _rename_legacy_keys
from rmt.memory.token_ids import check_token_ids


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


def _most_memory(kind_class, adapter, config) -> int:
    """The most memory tokens that leave the base model's learned positions room for one segment
    token (a kind's positions grow with its memory tokens)."""
    def fits(m):
        trial = RMTConfig.from_dict({**config.to_dict(), "num_mem_tokens": m})
        return kind_class.extra_positions(adapter, trial) < adapter.max_positions

    low, high = 0, config.num_mem_tokens  # fits(high) is False
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low

class RecurrentMemoryTransformer(Generation, Persistence, nn.Module):
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
        return self.memory_kind.diagonal_unsupported_reason(self)

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
        per segment that computed any (see ``losses.joined``), encoders' the classifier logits.

        The write rate (the kind's ``write_rate`` of each state: gated writes) is averaged over the
        (row, segment) pairs that had tokens: the kind's ``extra_loss`` turns it into a training loss term.
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
            results = self.memory_kind.run_diagonal(self.base_model, state, segments, logits_from, output_memories)
        else:
            results = self._sequential(segments, state, logits_from)
        pieces, memories = [], []
        cls_logits = None
        rate_sum, rate_count = None, 0
        for s, ((_, seg_lengths), (logits, new_state)) in enumerate(zip(segments, results)):
            state = new_state if new_state is not None else state
            rate = None if new_state is None else self.memory_kind.write_rate(new_state)
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
        input_ids = check_token_ids(input_ids, self.adapter.vocab_size).to(self.device)
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
                compact_labels = losses.compact_labels(labels, order, lengths, longest)
        logits_from = "all"
        if is_decoder and not output_logits:
            n_segments = max(1, math.ceil(longest / self.config.segment_size))
            logits_from = [None] * n_segments if compact_labels is None else \
                losses.first_labelled(compact_labels, lengths, self.config.segment_size, n_segments)

        logits, state, memories, write_rate = self._run_segments(compact, lengths, state, logits_from=logits_from,
                                                                 output_memories=output_memories, diagonal=diagonal)
        memory, store = self.memory_kind.public(state)

        pieces = None
        if is_decoder:  # the pieces of output_logits=False, or all the logits joined
            pieces, logits = (None, losses.joined(logits)) if output_logits else (logits, None)
        loss = None
        if labels is not None:
            if not is_decoder:
                loss = losses.classification_loss(self.base_model.config.problem_type, logits, labels)
            elif output_logits:
                loss = losses.lm_loss(logits, compact_labels)
            else:
                loss = losses.lm_loss_on_pieces(pieces, compact_labels, self.adapter.vocab_size)
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
