"""Accuracy of a trained `rmt train` run at several input lengths (segments), the trainer's own
evaluation (answer-token argmax on its fixed `eval` stories, the same stories the run validated on),
for the RMT model and, optionally, beside it the base model without memory reading the whole
input (up to its window). Used for results/issue17; not a test.

    python results/issue17/length_eval.py RUN/final --segments 1,4,16,32,64 --samples 40
"""

import argparse
import json
import time

import torch

from rmt import runs
from rmt.training.config import TrainConfig
from rmt.training.tasks import TaskData
from rmt.training.trainer import evaluate


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--segments", default="1,4,16,32,64")
    ap.add_argument("--samples", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--bf16", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from rmt.memory import RecurrentMemoryTransformer

    located = runs.locate(args.model)
    cfg = TrainConfig.from_file(located.train_config)
    tokenizer = runs.load_tokenizer(located.where)
    model = RecurrentMemoryTransformer.from_pretrained(located.where).eval()
    if args.bf16:
        model = model.to(torch.bfloat16)
    data = TaskData(cfg, tokenizer)
    for n in [int(x) for x in args.segments.split(",")]:
        start = time.time()
        with torch.no_grad():
            r = evaluate(model, data, n, args.samples, args.batch_size)
        print(json.dumps({"segments": n, "tokens": n * cfg.segment_size, "samples": r["samples"],
                          "accuracy": round(r["accuracy"], 4), "seconds": round(time.time() - start, 1)}), flush=True)


if __name__ == "__main__":
    main()
