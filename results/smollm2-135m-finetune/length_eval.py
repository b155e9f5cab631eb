"""Accuracy of a trained `rmt train` run at several input lengths (segments), the trainer's own
evaluation (answer-token argmax on its fixed `eval` stories, the same stories the run validated on),
for the RMT model and, optionally, beside it the base model without memory reading the whole
input (up to its window). Used for results/smollm2-135m-finetune; not a test.

    python results/smollm2-135m-finetune/length_eval.py RUN/final --segments 1,4,16,32,64 --samples 40
"""

import argparse
import json
import time

import torch

from rmt import runs
from rmt.training.config import TrainConfig
from rmt.training.tasks import TaskData
from rmt.training.trainer import evaluate


def load_run(model: str, bf16: bool = False):
    """A trained run's RMT model (``RUN/final`` or the run dir; eval mode, bf16 weights if asked)
    and the run's ``TaskData`` (its settings, its tokenizer). Also used by armt_leads.py."""
    from rmt.memory import RecurrentMemoryTransformer

    located = runs.locate(model)
    cfg = TrainConfig.from_file(located.train_config)
    loaded = RecurrentMemoryTransformer.from_pretrained(located.where).eval()
    return (loaded.to(torch.bfloat16) if bf16 else loaded), TaskData(cfg, runs.load_tokenizer(located.where))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--segments", default="1,4,16,32,64")
    ap.add_argument("--samples", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--bf16", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model, data = load_run(args.model, args.bf16)
    cfg = data.cfg
    for n in [int(x) for x in args.segments.split(",")]:
        start = time.time()
        with torch.no_grad():
            r = evaluate(model, data, n, args.samples, args.batch_size)
        print(json.dumps({"segments": n, "tokens": n * cfg.rmt.segment_size, "samples": r["samples"],
                          "accuracy": round(r["accuracy"], 4), "seconds": round(time.time() - start, 1)}), flush=True)


if __name__ == "__main__":
    main()
