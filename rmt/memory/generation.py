"""Reading a stream and generating: ``RecurrentMemoryTransformer.stream`` (any number of chunks,
constant memory) and ``generate`` (the context through memory, then lock-step decoding inside each
row's current segment with one KV cache)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import torch

from rmt.errors import UsageError
from rmt.memory.adapters import DecoderLayers
from rmt.memory.diagonal import DIAGONAL_BLOCK
from rmt.memory.kinds.retrieval import RetrievalStore
from rmt.memory.token_ids import check_token_ids


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


class Generation:
    """``RecurrentMemoryTransformer``'s streaming and generation (a mixin: it runs the model's segment
    loop, ``_run_segments``, and its memory kind's decoding)."""

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
            chunk = check_token_ids(chunk, self.adapter.vocab_size, name="stream chunk").to(self.device)
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
        input_ids = check_token_ids(input_ids, self.adapter.vocab_size).to(self.device)
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
