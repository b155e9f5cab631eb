"""RMT checkpoints (``rmt train`` output): the context streams through memory, any length.

A checkpoint directory holds ``RecurrentMemoryTransformer.save_pretrained`` files plus the HF
tokenizer; ``model.generate`` reads the context segment by segment and decodes the answer, so there
is no window: no cell is ever "over window".
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch

from rmt import runs
from rmt.errors import UsageError
from rmt.evaluation.base import LocalModel, LocalRunner
from rmt.fingerprint import weights_fingerprint
from rmt.evaluation.hf import pick_device
from rmt.memory import RecurrentMemoryTransformer
from rmt.runs import RMT_CONFIG_FILE, is_rmt_checkpoint  # noqa: F401  (the names it had here)


class RMTModel(LocalModel):
    """An RMT checkpoint behind the :class:`LocalModel` interface. ``show_progress``: a batch of at
    least ``progress_from_tokens`` prompt tokens (a long cell: minutes to read) shows a bar of the
    tokens read so far, with tokens/s and the time left (``rmt eval`` turns it on, ``--no-progress`` off)."""

    show_progress = False
    progress_from_tokens = 32768

    def __init__(self, path: str | Path, device: str | None = None, model=None, tokenizer=None,
                 max_batch_tokens: int = 65536):
        self.name = str(path)
        self.device = pick_device(device)
        self.tokenizer = tokenizer if tokenizer is not None else runs.load_tokenizer(path)
        if model is None:
            if not Path(path).is_dir():
                raise UsageError(f"RMT checkpoint directory not found: {path}")
            model = RecurrentMemoryTransformer.from_pretrained(path)
            self.weights = weights_fingerprint(path)
        self.model = model.to(self.device).eval()
        self.window = None
        # Rows are padded to the longest in a batch, so keep batches to similar lengths.
        self.max_batch_tokens = max_batch_tokens

    def _generate(self, batch_ids, max_new_tokens, do_sample: bool = False, temperature: float = 1.0,
                  top_p: float = 1.0, seed: int | None = None):
        if do_sample and top_p < 1:
            raise UsageError(f"top_p={top_p} is not supported for RMT checkpoints (their generate samples with "
                             "temperature and top_k, not top_p); leave top_p at 1")
        width = max(len(ids) for ids in batch_ids)
        # RMT's generate takes each row's tokens by its mask, so right padding is fine.
        input_ids = torch.tensor([ids + [0] * (width - len(ids)) for ids in batch_ids], device=self.device)
        mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids in batch_ids], device=self.device)
        generator = torch.Generator(device=self.device).manual_seed(seed) if seed is not None else None
        sample = {"do_sample": True, "temperature": temperature, "generator": generator} if do_sample else {"do_sample": False}
        with self._reading_bar(sum(len(ids) for ids in batch_ids), len(batch_ids) * width):
            new = self.model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                      eos_token_id=self.tokenizer.eos_token_id, **sample)
        return new.tolist()

    @contextmanager
    def _reading_bar(self, tokens: int, padded: int):
        """A tqdm bar over the segments read (counted where the memory kind embeds each segment's
        tokens: a forward hook on the input embeddings, nothing in the segment loop changes)."""
        if not self.show_progress or tokens < self.progress_from_tokens:
            yield
            return
        from tqdm import tqdm

        bar = tqdm(total=padded, unit="tok", unit_scale=True, desc=f"reading {tokens:,} tokens", leave=False,
                   smoothing=0.05, mininterval=1.0)

        def count(_module, args, _output):
            ids = args[0] if args else None
            if isinstance(ids, torch.Tensor) and ids.dim() == 2 and ids.shape[1] > 1:  # a segment, not a decode step
                bar.update(min(ids.numel(), max(0, bar.total - bar.n)))

        handle = self.model.base_model.get_input_embeddings().register_forward_hook(count)
        try:
            yield
        finally:
            handle.remove()
            bar.close()


def rmt_runner(path: str | Path, device: str | None = None, **runner_kwargs) -> LocalRunner:
    return LocalRunner(RMTModel(path, device=device), **runner_kwargs)
