"""Local Hugging Face causal LMs (a directory, or a hub name when online), full attention."""

from __future__ import annotations

import torch

from rmt import runs
from rmt.errors import UsageError
from rmt.evaluation.base import LocalModel, LocalRunner, _ids
from rmt.fingerprint import weights_fingerprint

# Config attributes under which HF models state their context window.
_WINDOW_ATTRS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")


def model_window(config, tokenizer=None) -> int | None:
    for attr in _WINDOW_ATTRS:
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < 10**9:  # HF uses a huge sentinel for "unknown"
        return limit
    return None


load_tokenizer = runs.load_tokenizer  # the name it had here


DTYPES = ("float32", "bfloat16", "float16")


def torch_dtype(dtype: str):
    """A torch dtype from its name (float32, bfloat16, float16); one-line ValueError otherwise."""
    if dtype not in DTYPES:
        raise UsageError(f"unknown --dtype {dtype!r}; allowed: {', '.join(DTYPES)}")
    return getattr(torch, dtype)


def pick_device(device: str | None = None) -> str:
    if device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


class HFModel(LocalModel):
    """``AutoModelForCausalLM`` + ``AutoTokenizer``; greedy decoding with left padding."""

    def __init__(self, name_or_path: str, device: str | None = None, dtype: str | None = None,
                 model=None, tokenizer=None):
        self.name = str(name_or_path)
        self.tokenizer = tokenizer if tokenizer is not None else runs.load_tokenizer(name_or_path)
        if model is None:
            model = runs.load_causal_lm(name_or_path, torch_dtype(dtype) if dtype else None)
            self.weights = weights_fingerprint(name_or_path)  # after loading: a hub name is in its cache now
        self.device = pick_device(device)
        self.model = model.to(self.device).eval()
        self.window = model_window(self.model.config, self.tokenizer)

    def _generate(self, batch_ids, max_new_tokens, do_sample: bool = False, temperature: float = 1.0,
                  top_p: float = 1.0, seed: int | None = None):
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        width = max(len(ids) for ids in batch_ids)
        # Left padding: every row's answer starts at the same position.
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in batch_ids], device=self.device)
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in batch_ids], device=self.device)
        # stop at any end token: the generation config's (an instruct model's end of turn) and the tokenizer's
        eos = {"eos_token_id": sorted(self.eos_ids())} if self.eos_ids() else {}
        sample = {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0} if do_sample else {"do_sample": False}
        if seed is not None:
            torch.manual_seed(seed)
        with torch.no_grad():
            out = self.model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                      pad_token_id=pad, **sample, **eos)
        return [row[width:] for row in out.tolist()]

    def eos_ids(self) -> set[int]:
        """Where an answer ends: the generation config's end token(s) (an int or a list; an instruct
        model's end of turn, ``<|im_end|>`` for SmolLM2) and the tokenizer's eos."""
        config = getattr(self.model, "generation_config", None)
        return _ids(getattr(config, "eos_token_id", None)) | _ids(self.tokenizer.eos_token_id)


def hf_runner(name_or_path: str, device: str | None = None, dtype: str | None = None, **runner_kwargs) -> LocalRunner:
    return LocalRunner(HFModel(name_or_path, device=device, dtype=dtype), **runner_kwargs)


class LastWindowModel(HFModel):
    """An HF causal LM that reads the last ``window`` tokens of a longer prompt (truncation on the
    left, as LLM evaluations read an input longer than their context) instead of answering "over
    window": the no-memory baseline of ``rmt reproduce``. Greedy decoding; each new token is
    predicted from the last ``window`` tokens of the prompt and what was generated so far.

    No KV cache (the window slides with every token): meant for short answers from small models."""

    def __init__(self, name_or_path: str, device: str | None = None, model=None, tokenizer=None, window: int | None = None):
        super().__init__(name_or_path, device=device, model=model, tokenizer=tokenizer)
        self.read_window = window or self.window
        if not self.read_window or self.read_window < 1:
            raise UsageError(f"model {name_or_path} states no context window; give window=N tokens")
        self.window = None  # every prompt is answered (from its last read_window tokens)

    def settings(self) -> dict:
        return {**super().settings(), "read_window": self.read_window}

    def _generate(self, batch_ids, max_new_tokens, do_sample: bool = False, temperature: float = 1.0,
                  top_p: float = 1.0, seed: int | None = None):
        if do_sample:
            raise UsageError("a model that reads the last window decodes greedily; sampling is not supported")
        rows = [list(ids) for ids in batch_ids]
        new: list[list[int]] = [[] for _ in rows]
        eos = self.eos_ids()
        live = list(range(len(rows)))
        with torch.no_grad():
            for _ in range(max_new_tokens):
                if not live:
                    break
                cut = [rows[i][-self.read_window:] for i in live]
                width = max(map(len, cut))
                # Right padding: every row's real tokens start at position 0, as in training.
                ids = torch.tensor([c + [0] * (width - len(c)) for c in cut], device=self.device)
                mask = torch.tensor([[1] * len(c) + [0] * (width - len(c)) for c in cut], device=self.device)
                logits = self.model(input_ids=ids, attention_mask=mask).logits
                last = torch.tensor([len(c) - 1 for c in cut], device=self.device)
                tokens = logits[torch.arange(len(cut), device=self.device), last].argmax(-1).tolist()
                for i, token in zip(live, tokens):
                    rows[i].append(token)
                    new[i].append(token)
                live = [i for i, token in zip(live, tokens) if token not in eos]
        return new
