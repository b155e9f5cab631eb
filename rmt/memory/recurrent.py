"""RecurrentMemoryTransformer: segments, memory recurrence, truncated BPTT, streaming, generation, save/load.

The memory state is an explicit value: ``forward``/``stream`` take it in (``memory=``) and hand it
back (``.memory``); nothing is cached on the module between calls.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import torch
from torch import nn
from torch.nn import functional as F
from transformers.utils import ModelOutput

from rmt.atomic import atomic_file
from rmt.memory.adapters import adapter_for, inner_model
from rmt.memory.cell import decoder_segment, encoder_segment
from rmt.memory.config import RMTConfig
from rmt.memory.retrieval import RetrievalStore, SelfRetrieval

WEIGHTS_NAME = "model.safetensors"
RMT_CONFIG_NAME = "rmt_config.json"
BASE_CONFIG_NAME = "config.json"


@dataclass
class RMTOutput(ModelOutput):
    """HF-style output (attribute and key access). ``loss``: mean over all label tokens (decoders, HF shift) or the classification loss (encoders).
    ``logits``: (batch, seq_len, vocab) aligned with ``input_ids`` (decoders; padding positions are 0),
    or (batch, num_labels) from each row's last segment (encoders).
    ``memory``: (batch, num_mem_tokens, hidden) after each row's last segment.
    ``retrieval_store``: RMT-R only, every memory state written so far (pass it back with ``memory``).
    ``memories``: with ``output_memories=True``, the memory after every segment (for inspection)."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    memory: torch.Tensor | None = None
    retrieval_store: RetrievalStore | None = None
    memories: tuple | None = None


@dataclass
class StreamState:
    """Result of :meth:`RecurrentMemoryTransformer.stream`: the memory after the last segment and the
    outputs of the last segment only (logits (batch, last_segment_len, vocab) for decoders)."""

    memory: torch.Tensor
    logits: torch.Tensor
    retrieval_store: RetrievalStore | None
    n_tokens: int
    n_segments: int


def _check_token_ids(input_ids, vocab_size: int, name: str = "input_ids") -> torch.Tensor:
    if not isinstance(input_ids, torch.Tensor):
        raise ValueError(f"{name} must be a torch.LongTensor, got {type(input_ids).__name__}")
    if input_ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ValueError(f"{name} must hold integer token ids, got dtype {input_ids.dtype}")
    if input_ids.dim() == 1:
        input_ids = input_ids[None, :]
    if input_ids.dim() != 2:
        raise ValueError(f"{name} must be 1-D (tokens) or 2-D (batch, tokens), got shape {tuple(input_ids.shape)}")
    if input_ids.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(input_ids.shape)}); give at least one token per row")
    low, high = int(input_ids.min()), int(input_ids.max())
    if low < 0 or high >= vocab_size:
        bad = high if high >= vocab_size else low
        raise ValueError(f"token id {bad} in {name} is outside the vocabulary: allowed 0..{vocab_size - 1}")
    return input_ids.long()


class RecurrentMemoryTransformer(nn.Module):
    """A HF model with recurrent memory tokens (RMT). Build it with :meth:`wrap`."""

    def __init__(self, base_model: nn.Module, config: RMTConfig):
        super().__init__()
        if not isinstance(config, RMTConfig):
            raise ValueError(f"config must be an RMTConfig, got {type(config).__name__}")
        self.adapter = adapter_for(base_model)
        self.base_model = base_model
        self.config = config
        m, hidden = config.num_mem_tokens, self.adapter.hidden_size
        extra = 2 * m if self.adapter.is_decoder else m + 3
        limit = self.adapter.max_positions
        if limit is not None and config.segment_size + extra > limit:
            raise ValueError(
                f"segment_size={config.segment_size} plus {extra} memory/special positions exceeds the base model's "
                f"{limit} positions; allowed segment_size <= {limit - extra}"
            )
        if not self.adapter.is_decoder:
            base_cfg = base_model.config
            self.cls_token_id = config.cls_token_id if config.cls_token_id is not None else getattr(base_cfg, "cls_token_id", None)
            self.sep_token_id = config.sep_token_id if config.sep_token_id is not None else getattr(base_cfg, "sep_token_id", None)
            if self.cls_token_id is None or self.sep_token_id is None:
                raise ValueError("encoder models need cls_token_id and sep_token_id: set them in RMTConfig (e.g. 101 and 102 for bert-base)")
            for name, value in (("cls_token_id", self.cls_token_id), ("sep_token_id", self.sep_token_id)):
                if not 0 <= value < self.adapter.vocab_size:
                    raise ValueError(f"{name}={value} is outside the vocabulary: allowed 0..{self.adapter.vocab_size - 1}")
        embedding = base_model.get_input_embeddings().weight
        # Memory starts at the scale of the input embeddings, so the first read looks like ordinary tokens.
        scale = float(embedding.detach().float().std()) if embedding.numel() > 1 else 0.02
        self.memory = nn.Parameter(
            torch.randn(m, hidden, device=embedding.device, dtype=torch.float32).mul_(scale).to(embedding.dtype)
        )
        self.retrieval = (
            SelfRetrieval(hidden, config.retrieval_heads).to(device=embedding.device, dtype=embedding.dtype)
            if config.self_retrieval
            else None
        )

    # ----------------------------------------------------------------- construction
    @classmethod
    def wrap(cls, base_model: nn.Module, config: RMTConfig | None = None) -> "RecurrentMemoryTransformer":
        """Wrap a supported HF model (GPT-2, Llama, Mistral, Qwen2/3 causal LMs; BERT sequence classifiers)."""
        return cls(base_model, config if config is not None else RMTConfig())

    @property
    def device(self) -> torch.device:
        return self.memory.device

    @property
    def dtype(self) -> torch.dtype:
        return self.memory.dtype

    def initial_memory(self, batch_size: int) -> torch.Tensor:
        return self.memory[None].expand(batch_size, -1, -1)

    def _check_memory(self, memory, batch: int) -> torch.Tensor:
        if memory is None:
            return self.initial_memory(batch)
        expected = (batch, self.config.num_mem_tokens, self.adapter.hidden_size)
        if not isinstance(memory, torch.Tensor) or tuple(memory.shape) != expected:
            got = tuple(memory.shape) if isinstance(memory, torch.Tensor) else type(memory).__name__
            raise ValueError(f"memory must be a tensor of shape {expected}, got {got}")
        return memory.to(device=self.device, dtype=self.dtype)

    def _empty_store(self, batch: int) -> RetrievalStore | None:
        if self.retrieval is None:
            return None
        return RetrievalStore.empty(batch, self.adapter.hidden_size, self.device, self.dtype)

    # ----------------------------------------------------------------- one segment
    def _segment(self, read_memory, tokens, lengths):
        if self.adapter.is_decoder:
            return decoder_segment(self.base_model, read_memory, tokens, lengths)
        pad_id = getattr(self.base_model.config, "pad_token_id", None) or 0
        return encoder_segment(self.base_model, read_memory, tokens, lengths, self.cls_token_id, self.sep_token_id, pad_id)

    def _read(self, memory, store):
        return self.retrieval(memory, store) if self.retrieval is not None else memory

    def _run_segments(self, tokens, lengths, memory, store, keep_logits=True, output_memories=False):
        """The recurrence over compact ``tokens`` (batch, L; row i has ``lengths[i]`` real tokens first).

        Rows are segmented from their own start; a row whose tokens have run out keeps its memory (and
        its RMT-R store) unchanged, so each row gets exactly what it would get alone.
        """
        seg = self.config.segment_size
        n_segments = max(1, math.ceil(int(lengths.max()) / seg))
        depth = self.config.bptt_depth
        logits_per_segment, memories = [], []
        cls_logits = None
        for s in range(n_segments):
            # Truncated BPTT: only the last `depth` segments of this call stay in the gradient path
            # through memory; everything that flows into segment n-depth is detached.
            if depth != -1 and 0 < s <= n_segments - depth:
                memory = memory.detach()
                store = store.detach() if store is not None else None
            seg_tokens = tokens[:, s * seg : (s + 1) * seg]
            seg_lengths = (lengths - s * seg).clamp(0, seg_tokens.shape[1])
            active = seg_lengths > 0
            read_memory = self._read(memory, store)
            logits, written = self._segment(read_memory, seg_tokens, seg_lengths)
            if store is not None:
                store = store.append(written, active)
            memory = torch.where(active[:, None, None], written, memory)
            if output_memories:
                memories.append(memory)
            if self.adapter.is_decoder:
                if keep_logits:
                    if bool((seg_lengths < logits.shape[1]).any()):  # zero the padding positions
                        is_pad = torch.arange(logits.shape[1], device=logits.device)[None, :] >= seg_lengths[:, None]
                        logits = logits.masked_fill(is_pad[:, :, None], 0.0)
                    logits_per_segment.append(logits)
                else:
                    logits_per_segment = [logits]  # streaming keeps only the last segment
            else:
                cls_logits = logits if cls_logits is None else torch.where(active[:, None], logits, cls_logits)
        if self.adapter.is_decoder:
            out_logits = torch.cat(logits_per_segment, dim=1) if keep_logits else logits_per_segment[0]
        else:
            out_logits = cls_logits
        return out_logits, memory, store, tuple(memories) if output_memories else None

    # ----------------------------------------------------------------- forward
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        memory: torch.Tensor | None = None,
        retrieval_store: RetrievalStore | None = None,
        output_memories: bool = False,
    ) -> RMTOutput:
        """Process the whole input segment by segment. ``attention_mask`` may pad rows on either side:
        each row is processed from its first real token, exactly as if it were alone."""
        input_ids = _check_token_ids(input_ids, self.adapter.vocab_size).to(self.device)
        batch, total = input_ids.shape
        if attention_mask is not None:
            if not isinstance(attention_mask, torch.Tensor) or attention_mask.dim() == 1 and batch == 1:
                attention_mask = torch.as_tensor(attention_mask).reshape(1, -1)
            if tuple(attention_mask.shape) != (batch, total):
                raise ValueError(f"attention_mask must have the shape of input_ids {(batch, total)}, got {tuple(attention_mask.shape)}")
            valid = attention_mask.to(self.device) != 0
            if bool(valid.all()):
                attention_mask = None
        if attention_mask is not None:
            lengths = valid.sum(dim=1)
            if bool((lengths == 0).any()):
                row = int((lengths == 0).nonzero()[0])
                raise ValueError(f"row {row} of the batch is empty (its attention_mask is all 0); give at least one token per row")
            # Compact: each row's real tokens first, in order (stable sort puts valid positions first).
            order = torch.argsort((~valid).to(torch.int8), dim=1, stable=True)
            compact = input_ids.gather(1, order)
        else:
            valid, order = None, None
            lengths = torch.full((batch,), total, dtype=torch.long, device=self.device)
            compact = input_ids
        longest = int(lengths.max())
        compact = compact[:, :longest]
        memory = self._check_memory(memory, batch)
        if retrieval_store is None:
            retrieval_store = self._empty_store(batch)

        logits, memory, store, memories = self._run_segments(compact, lengths, memory, retrieval_store, output_memories=output_memories)

        loss = None
        if labels is not None:
            labels = labels.to(self.device)
            if self.adapter.is_decoder:
                if tuple(labels.shape) != (batch, total):
                    raise ValueError(f"labels must have the shape of input_ids {(batch, total)}, got {tuple(labels.shape)}")
                loss = self._lm_loss(logits, labels, order, lengths, longest)
            else:
                loss = self._classification_loss(logits, labels)
        if self.adapter.is_decoder and order is not None:
            # Back to the caller's layout (logits at padding positions are 0).
            full = logits.new_zeros(batch, total, logits.shape[-1])
            full[:, :longest] = logits
            right_padded = bool((order == torch.arange(total, device=order.device)).all())
            logits = full if right_padded else torch.zeros_like(full).scatter(1, order[:, :, None].expand_as(full), full)
        return RMTOutput(loss=loss, logits=logits, memory=memory, retrieval_store=store, memories=memories)

    @staticmethod
    def _lm_loss(logits, labels, order, lengths, longest):
        """HF causal-LM loss over the whole (compacted) sequence: token t predicts label t+1, across
        segment boundaries; -100 and padding are ignored; mean over all label tokens."""
        if order is not None:
            labels = labels.gather(1, order)[:, :longest]
            pad = torch.arange(longest, device=labels.device)[None, :] >= lengths[:, None]
            labels = labels.masked_fill(pad, -100)
        shift_logits = logits[:, :-1].float()
        shift_labels = labels[:, 1:]
        return F.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1), ignore_index=-100)

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
                raise ValueError(f"class label outside 0..{num_labels - 1}: got {labels.tolist()}")
            return F.cross_entropy(logits.float().view(-1, num_labels), labels.view(-1))
        return F.binary_cross_entropy_with_logits(logits.float(), labels.float())

    # ----------------------------------------------------------------- streaming
    @torch.no_grad()
    def stream(self, chunks: Iterable[torch.Tensor], memory: torch.Tensor | None = None, retrieval_store: RetrievalStore | None = None) -> StreamState:
        """Read any number of token chunks (1-D, or 2-D with a fixed batch size) segment by segment,
        carrying only the memory: peak memory does not grow with the total length (RMT-R's store
        excepted, which grows by num_mem_tokens vectors per segment). Returns the final memory and
        the last segment's logits; equal to ``forward`` on the concatenated input."""
        seg = self.config.segment_size
        pending: list[torch.Tensor] = []
        pending_len = 0
        batch = None
        state = {"memory": memory, "store": retrieval_store, "logits": None, "segments": 0, "tokens": 0}

        def run(tokens):
            nonlocal batch
            lengths = torch.full((tokens.shape[0],), tokens.shape[1], dtype=torch.long, device=self.device)
            logits, state["memory"], state["store"], _ = self._run_segments(tokens, lengths, state["memory"], state["store"], keep_logits=False)
            state["logits"] = logits
            state["segments"] += 1

        for chunk in chunks:
            if isinstance(chunk, torch.Tensor) and chunk.numel() == 0:
                continue
            chunk = _check_token_ids(chunk, self.adapter.vocab_size, name="stream chunk").to(self.device)
            if batch is None:
                batch = chunk.shape[0]
                state["memory"] = self._check_memory(state["memory"], batch)
                if state["store"] is None:
                    state["store"] = self._empty_store(batch)
            elif chunk.shape[0] != batch:
                raise ValueError(f"all stream chunks must have the same batch size {batch}, got a chunk of shape {tuple(chunk.shape)}")
            pending.append(chunk)
            pending_len += chunk.shape[1]
            state["tokens"] += chunk.shape[1]
            if pending_len >= seg:
                buffered = torch.cat(pending, dim=1)
                n_full = buffered.shape[1] // seg
                for s in range(n_full):
                    run(buffered[:, s * seg : (s + 1) * seg])
                rest = buffered[:, n_full * seg :]
                pending, pending_len = ([rest], rest.shape[1]) if rest.shape[1] else ([], 0)
        if batch is None:
            raise ValueError("stream got no tokens: the chunks are empty")
        if pending_len:
            run(torch.cat(pending, dim=1))
        return StreamState(state["memory"], state["logits"], state["store"], state["tokens"], state["segments"])

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
    ) -> torch.Tensor:
        """Read the context through memory, then decode; returns only the new tokens (batch, <= max_new_tokens).

        Token t is exactly what the argmax (or sample) of ``forward(context + new[:t]).logits[:, -1]``
        would give: the context's full segments go through memory in one batched pass, then all rows
        decode in lock-step inside their current segments with one KV cache, writing memory and
        opening a new segment whenever a row's current one fills up. Rows that stop early (eos) are padded with the eos id
        (else the base config's pad_token_id, else 0).
        """
        if not self.adapter.is_decoder:
            raise ValueError(f"generate() needs a causal LM; {type(self.base_model).__name__} is a sequence classifier")
        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
        if do_sample and not temperature > 0:
            raise ValueError(f"temperature must be > 0 when sampling, got {temperature!r}")
        if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"top_k must be None or an integer >= 1, got {top_k!r}")
        eos_ids = set([eos_token_id] if isinstance(eos_token_id, int) else (eos_token_id or []))
        input_ids = _check_token_ids(input_ids, self.adapter.vocab_size).to(self.device)
        batch, total = input_ids.shape
        if attention_mask is None:
            valid = torch.ones_like(input_ids, dtype=torch.bool)
        else:
            if tuple(attention_mask.shape) != (batch, total):
                raise ValueError(f"attention_mask must have the shape of input_ids {(batch, total)}, got {tuple(attention_mask.shape)}")
            valid = attention_mask.to(self.device) != 0
        rows = [input_ids[i][valid[i]] for i in range(batch)]
        for i, row in enumerate(rows):
            if row.numel() == 0:
                raise ValueError(f"row {i} of the batch is empty (its attention_mask is all 0); give at least one token per row")

        seg = self.config.segment_size
        # 1. Every full segment before each row's current (last, possibly partial) one, batched.
        full_lengths = torch.tensor([((r.numel() - 1) // seg) * seg for r in rows], device=self.device)
        memory = self.initial_memory(batch)
        store = self._empty_store(batch)
        if int(full_lengths.max()) > 0:
            longest = int(full_lengths.max())
            padded = torch.zeros(batch, longest, dtype=torch.long, device=self.device)
            for i, r in enumerate(rows):
                padded[i, : full_lengths[i]] = r[: full_lengths[i]]
            _, memory, store, _ = self._run_segments(padded, full_lengths, memory, store, keep_logits=False)

        # 2. All rows together: decode within each row's current segment.
        currents = [row[int(full_lengths[i]) :].tolist() for i, row in enumerate(rows)]
        outputs = self._decode(memory, store, currents, max_new_tokens, do_sample, temperature, top_k, eos_ids, generator)
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

    def _decode(self, memory, store, currents, max_new_tokens, do_sample, temperature, top_k, eos_ids, generator):
        """Decode all rows in lock-step inside their current segments with one KV cache.

        ``currents[i]``: row i's tokens in its current segment (1..segment_size). The cache holds
        ``[read memory; current tokens; padding]`` per row (padding masked, positions per row), and
        each step appends one token per row. When a row's segment is full and it needs another token,
        its memory is written (a plain segment pass, as in ``forward``), the token opens its next
        segment, and the cache is rebuilt for all rows (each row's current segment is re-read).
        """
        seg, m = self.config.segment_size, self.config.num_mem_tokens
        batch = len(currents)
        decoder = inner_model(self.base_model)
        embed = self.base_model.get_input_embeddings()
        head = self.base_model.get_output_embeddings()
        device = self.device

        def prefill(read_memory):
            width = max(len(c) for c in currents)
            ids = torch.zeros(batch, width, dtype=torch.long, device=device)
            for i, c in enumerate(currents):
                ids[i, : len(c)] = torch.tensor(c, dtype=torch.long, device=device)
            lengths = torch.tensor([len(c) for c in currents], device=device)
            valid = torch.cat([torch.ones(batch, m, dtype=torch.bool, device=device),
                               torch.arange(width, device=device)[None, :] < lengths[:, None]], dim=1)
            positions = torch.arange(m + width, device=device)[None, :].expand(batch, -1)
            out = decoder(inputs_embeds=torch.cat([read_memory, embed(ids)], dim=1), attention_mask=valid.long(),
                          position_ids=positions, use_cache=True)
            last = out.last_hidden_state[torch.arange(batch, device=device), m + lengths - 1]
            return out.past_key_values, valid.long(), head(last)

        read_memory = self._read(memory, store)
        cache, mask, logits = prefill(read_memory)
        outputs = [[] for _ in range(batch)]
        done = [False] * batch
        for step in range(max_new_tokens):
            tokens = self._pick(logits, do_sample, temperature, top_k, generator).tolist()
            for i, token in enumerate(tokens):
                if not done[i]:
                    outputs[i].append(token)
                    done[i] = token in eos_ids
            if all(done) or step == max_new_tokens - 1:
                break
            full = [len(c) == seg for c in currents]
            if any(full):
                # Write memory for the rows whose segment is full; the new token opens their next segment.
                rows = torch.tensor([i for i in range(batch) if full[i]], device=device)
                segment_ids = torch.tensor([currents[i] for i in rows.tolist()], dtype=torch.long, device=device)
                _, written = decoder_segment(self.base_model, read_memory[rows], segment_ids, torch.full((len(rows),), seg, device=device))
                is_full = torch.tensor(full, device=device)
                scattered = memory.clone()
                scattered[rows] = written
                if store is not None:
                    store = store.append(scattered, is_full)
                memory = torch.where(is_full[:, None, None], scattered, memory)
                for i, token in enumerate(tokens):
                    currents[i] = [token] if full[i] else currents[i] + [token]
                read_memory = self._read(memory, store)
                cache, mask, logits = prefill(read_memory)
            else:
                for i, token in enumerate(tokens):
                    currents[i].append(token)
                positions = torch.tensor([[m + len(c) - 1] for c in currents], device=device)
                mask = torch.cat([mask, torch.ones(batch, 1, dtype=mask.dtype, device=device)], dim=1)
                out = decoder(inputs_embeds=embed(torch.tensor(tokens, device=device)[:, None]), attention_mask=mask,
                              position_ids=positions, past_key_values=cache, use_cache=True)
                cache = out.past_key_values
                logits = head(out.last_hidden_state[:, -1])
        return outputs

    # ----------------------------------------------------------------- save / load
    def save_pretrained(self, path: str | os.PathLike) -> None:
        """Write ``config.json`` (base HF config), ``rmt_config.json`` and ``model.safetensors`` (base
        weights + memory + retrieval) into ``path``; each file is written to a temp file then renamed,
        so a crash never leaves a half-written checkpoint file. Other files in ``path`` (a tokenizer) are kept."""
        from safetensors.torch import save_model

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        base_config = self.base_model.config.to_dict()
        base_config["architectures"] = [type(self.base_model).__name__]
        rmt_config = {"rmt_config": self.config.to_dict(), "base_model_class": type(self.base_model).__name__, "format_version": 1}

        def write_json(data):
            return lambda tmp: Path(tmp).write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")

        atomic_file(path / WEIGHTS_NAME, lambda tmp: save_model(self, tmp, metadata={"format": "pt"}))
        atomic_file(path / BASE_CONFIG_NAME, write_json(base_config))
        atomic_file(path / RMT_CONFIG_NAME, write_json(rmt_config))

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> "RecurrentMemoryTransformer":
        """Rebuild the base model from the saved config, wrap it and load all weights."""
        import transformers
        from safetensors import safe_open
        from safetensors.torch import load_model

        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"RMT checkpoint directory not found: {path}")
        for name in (RMT_CONFIG_NAME, BASE_CONFIG_NAME, WEIGHTS_NAME):
            if not (path / name).is_file():
                raise FileNotFoundError(f"{path} is not an RMT checkpoint: missing {name} (expected {RMT_CONFIG_NAME}, {BASE_CONFIG_NAME}, {WEIGHTS_NAME})")

        def read_json(name):
            try:
                return json.loads((path / name).read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise ValueError(f"corrupt checkpoint file {path / name}: {exc}") from None

        meta = read_json(RMT_CONFIG_NAME)
        if not isinstance(meta, dict) or "rmt_config" not in meta or "base_model_class" not in meta:
            raise ValueError(f"corrupt checkpoint file {path / RMT_CONFIG_NAME}: expected keys rmt_config and base_model_class")
        config = RMTConfig.from_dict(meta["rmt_config"])
        base_dict = read_json(BASE_CONFIG_NAME)
        class_name = meta["base_model_class"]
        model_class = getattr(transformers, str(class_name), None)
        if model_class is None or not hasattr(model_class, "config_class"):
            raise ValueError(f"checkpoint names an unknown base model class {class_name!r}")
        try:
            base_config = model_class.config_class.from_dict(base_dict)
        except Exception as exc:  # a config that HF cannot parse is a corrupt checkpoint
            raise ValueError(f"corrupt checkpoint file {path / BASE_CONFIG_NAME}: {' '.join(str(exc).split())}") from None
        weights = path / WEIGHTS_NAME
        try:
            with safe_open(str(weights), framework="pt") as f:
                keys = list(f.keys())
                saved_dtype = f.get_slice(keys[0]).get_dtype() if keys else None
                saved_shapes = {key: tuple(f.get_slice(key).get_shape()) for key in keys}
        except Exception as exc:
            raise ValueError(f"corrupt checkpoint weights {weights}: {' '.join(str(exc).split())}") from None
        base_model = model_class(base_config)
        model = cls(base_model, config)
        torch_dtype = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}.get(saved_dtype)
        if torch_dtype is not None:
            model.to(torch_dtype)
        expected_shapes = {key: tuple(value.shape) for key, value in model.state_dict().items()}
        for key, shape in saved_shapes.items():
            if key not in expected_shapes:
                raise ValueError(f"checkpoint weights {weights} do not match the model: unexpected tensor {key}")
            if shape != expected_shapes[key]:
                raise ValueError(f"checkpoint weights {weights} do not match the model: {key} has shape {shape}, the model expects {expected_shapes[key]}")
        try:
            missing, unexpected = load_model(model, str(weights), strict=False)
        except Exception as exc:
            raise ValueError(f"corrupt checkpoint weights {weights}: {' '.join(str(exc).split())}") from None
        if missing or unexpected:
            raise ValueError(f"checkpoint weights {weights} do not match the model: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")
        model.eval()
        if device is not None or dtype is not None:
            model.to(device=device, dtype=dtype)
        return model
