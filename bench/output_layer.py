"""A training step of the model without memory with the output layer on every position (HF's loss
from the full logits) against on the positions before a label only (`rmt.training.trainer.
labelled_logits`, what `rmt train` and its evaluation do since issue 17 item 6), side by side in
one run. A bench, not a test.

The batch is a real `rmt train` batch of the in-context runs (facts and question, loss on the
answer and EOS). Both paths run forward + backward under the same autocast on the same batch;
rounds alternate which goes first, so load drift penalises both alike. Reported: the median
seconds of each and their ratio, and the largest difference of the two losses.

    python bench/output_layer.py                         # smollm2-135m, qa2 at 0k, batch 8, bf16
    python bench/output_layer.py --task qa1 --window 128 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from rmt import runs
from rmt.threads import set_threads
from rmt.training.config import TrainConfig
from rmt.training.tasks import TaskData
from rmt.training.trainer import labelled_logits


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--task", default="qa2")
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    set_threads(args.threads)
    where = runs.locate(args.model).where
    model = runs.load_causal_lm(where).train()
    cfg = TrainConfig(model=args.model, task=args.task, background="none", memory=False, rmt=dict(segment_size=args.window),
                      curriculum=[1], batch_size=args.batch)
    data = TaskData(cfg, runs.load_tokenizer(where))

    def full(batch):
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss

    def labelled(batch):
        return labelled_logits(model, batch).loss

    seconds = {"full logits": [], "labelled positions": []}
    gaps = []
    for r in range(args.rounds + 1):  # round 0 warms up and is not counted
        batch = data.batch("train", r, 1, args.batch)
        order = list(seconds) if r % 2 == 0 else list(seconds)[::-1]
        losses = {}
        for name in order:
            started = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
                loss = (full if name == "full logits" else labelled)(batch)
            loss.backward()
            model.zero_grad(set_to_none=True)
            if r:
                seconds[name].append(time.perf_counter() - started)
            losses[name] = float(loss.detach())
        gaps.append(abs(losses["full logits"] - losses["labelled positions"]))
    tokens = int(batch["attention_mask"].sum())
    result = {name: round(statistics.median(v), 3) for name, v in seconds.items()}
    result.update(ratio=round(result["full logits"] / result["labelled positions"], 3), tokens_per_batch=tokens,
                  max_loss_difference=max(gaps), model=args.model, task=args.task, batch=args.batch,
                  precision=args.precision, threads=args.threads, rounds=args.rounds)
    print(f"forward + backward, {args.model}, {args.task} at 0k, batch {args.batch} ({tokens} tokens), {args.precision}:")
    for name in seconds:
        print(f"  {name:>20}: {result[name]:.3f} s (median of {args.rounds})")
    print(f"  full / labelled: {result['ratio']:.2f}x; largest loss difference {max(gaps):.2e}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
