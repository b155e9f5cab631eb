"""Accuracy of a campaign checkpoint at several lengths, split by where the supporting fact lies:
in the question's own (last) segment, which a reader of the last segment alone could use, or
earlier, which only memory can carry (issue: "read those numbers against what needs no memory").

    python results/pretrained-memory/length_eval.py RUN_OR_CHECKPOINT --segments 2,8,32 --samples 64 \
        --out results/pretrained-memory/detect/curve.jsonl

Appends one JSON line per length to ``--out``: the checkpoint's step, segments, samples, accuracy,
and accuracy (and count) with the fact in the last segment / earlier. The evaluation samples are
the run's own evaluation set (``TaskData`` split "eval", never trained on), read segment by segment
through memory (``rmt.training.diagnose.trace``), in fp32.
"""

import argparse
import json
import time
from pathlib import Path

import torch

from rmt import runs
from rmt.memory import RecurrentMemoryTransformer
from rmt.threads import set_threads
from rmt.training.config import TrainConfig
from rmt.training.diagnose import find_checkpoint, trace
from rmt.training.tasks import TaskData


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--segments", default="2,8,32")
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    set_threads(args.threads)
    model_dir, config_file = find_checkpoint(args.checkpoint)
    cfg = TrainConfig.from_file(config_file)
    state = model_dir / runs.TRAINER_STATE_FILE
    step = json.loads(state.read_text())["step"] if state.is_file() else None
    model = RecurrentMemoryTransformer.from_pretrained(model_dir)
    data = TaskData(cfg, runs.load_tokenizer(model_dir))
    for segments in map(int, args.segments.split(",")):
        started = time.time()
        examples = [data.example(r, segments) for r in data.records("eval", 0, segments, args.samples)]
        with torch.no_grad():
            result = trace(model, examples, model.config.segment_size, args.batch_size, progress=False,
                           eos=data.eos_id is not None)
        last = [b for b in result["accuracy_by_distance"] if b["max"] == 0]
        earlier = [b for b in result["accuracy_by_distance"] if b["min"] >= 1]
        n_last, n_earlier = sum(b["samples"] for b in last), sum(b["samples"] for b in earlier)
        record = {"checkpoint": str(model_dir), "step": step, "task": cfg.task, "train_segments": cfg.max_segments,
                  "segments": segments, "samples": args.samples, "accuracy": round(result["accuracy"], 4),
                  "n_last": n_last, "n_earlier": n_earlier,
                  "accuracy_last": round(sum(b["accuracy"] * b["samples"] for b in last) / n_last, 4) if n_last else None,
                  "accuracy_earlier": round(sum(b["accuracy"] * b["samples"] for b in earlier) / n_earlier, 4) if n_earlier else None,
                  "seconds": round(time.time() - started, 1)}
        print(json.dumps(record), flush=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
