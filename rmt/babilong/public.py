"""The public BABILong dataset (``RMT-team/babilong`` on the Hugging Face Hub) as our records.

Online users only (the tests never download). The Hub dataset has one config per length name
(e.g. "0k", "4k", "128k") and one split per task ("qa1" ... "qa10"), with columns ``input``,
``question``, ``target``; we add the metadata our own records carry.
"""

from __future__ import annotations

from rmt.babilong.haystack import parse_length
from rmt.babilong.tasks import check_task

PUBLIC_DATASET = "RMT-team/babilong"


def public_to_records(rows, task: str, length: str) -> list[dict]:
    """Rows of the public dataset (dicts with input/question/target) -> our records."""
    name, tokens = parse_length(length)
    records = []
    for i, row in enumerate(rows):
        records.append({
            "input": row["input"], "question": row["question"], "target": row["target"],
            "task": task, "length": name, "target_tokens": tokens, "n_tokens": None, "seed": None,
            "sample": i, "facts_source": PUBLIC_DATASET, "background": "pg19", "tokenizer": "gpt2",
        })
    return records


def load_public(task: str = "qa1", length: str = "0k", samples: int | None = None,
                dataset: str = PUBLIC_DATASET, **load_kwargs) -> list[dict]:
    """Records of one task at one length from the public dataset (downloads through ``datasets``)."""
    import datasets  # lazy: datasets ~1 s; only the public dataset needs it

    task = check_task(task)
    name, _ = parse_length(length)
    split = f"{task}" if samples is None else f"{task}[:{int(samples)}]"
    rows = datasets.load_dataset(dataset, name, split=split, **load_kwargs)
    return public_to_records(rows, task, name)
