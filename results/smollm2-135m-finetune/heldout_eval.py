"""Held-out evaluation of an `rmt train` run (issue 17): accuracy on stories the run never trained on.

    python results/smollm2-135m-finetune/heldout_eval.py RUN_DIR --samples 100 [--split test] [--json OUT.json] [--also EARLIER_RUN]

The test stories are `TaskData.batch("test", i, ...)` of the run's own config: the same format as
training (context, question, answer, EOS; greedy-argmax accuracy on every answer token), seeded by
the string "<seed>:test:<index>:<segments>", a split name the trainer never uses ("train", "eval").
Distinct seeds do not by themselves make the *stories* distinct (small worlds repeat), so every
test story is also compared with every story the run trained on (facts + question, exact match),
and the accuracy is reported on all test stories and on those never seen in training.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import torch

from rmt.threads import set_threads
from rmt.training.config import TrainConfig
from rmt.training.curriculum import Curriculum
from rmt.training.tasks import TaskData, answer_accuracy
from rmt.training.trainer import last_window


def story(record):
    return (tuple(record["facts"]), record["question"], str(record["target"]))


def trained_stories(run: Path, tok) -> tuple[set, int]:
    """Every story ``run`` trained on: step s used batch("train", s, segments_for_step(s), batch_size)."""
    cfg = TrainConfig.from_file(run / "train_config.json")
    data = TaskData(cfg, tok)
    steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    n_steps = max(r["step"] for r in steps)
    seen = set()  # the curriculum replays the stage moves the run made (its "stage" records)
    curriculum = Curriculum(cfg.curriculum, cfg.stage_steps, cfg.stage_threshold, cfg.vary_n_segments, cfg.seed)
    stage_moves = {r["step"]: r["finished_stage"] + 1 for r in steps if r["type"] == "stage"}
    for s in range(n_steps):
        segs = curriculum.segments_for_step(s)
        for rec in data.records("train", s, segs, cfg.batch_size):
            seen.add(story(rec))
        if s + 1 in stage_moves and stage_moves[s + 1] < len(cfg.curriculum):
            curriculum.stage, curriculum.stage_start = stage_moves[s + 1], s + 1
    return seen, n_steps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=20)
    ap.add_argument("--split", default="test")
    ap.add_argument("--segments", type=int, default=None, help="default: the last curriculum stage")
    ap.add_argument("--json", default=None)
    ap.add_argument("--also", action="append", default=[], help="a run this one continued (--model RUN/final): its "
                    "training stories count as seen too")
    args = ap.parse_args()
    set_threads(1)
    run = Path(args.run)
    cfg = TrainConfig.from_file(run / "train_config.json")
    final = run / "final"
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(final)
    if (final / "rmt_config.json").is_file():
        from rmt import RecurrentMemoryTransformer

        model, window = RecurrentMemoryTransformer.from_pretrained(final), None
    else:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(final)
        window = cfg.max_segments * cfg.rmt.segment_size
    model.eval()
    data = TaskData(cfg, tok)
    segments = args.segments or cfg.max_segments

    # Every story the run trained on (and the runs it continued, --also).
    seen, n_steps = set(), 0
    for trained in [run] + [Path(a) for a in args.also]:
        stories, steps_here = trained_stories(trained, tok)
        seen |= stories
        n_steps += steps_here

    correct, unseen_correct, unseen, truncated = [], 0, 0, False
    started = time.perf_counter()
    for index, start in enumerate(range(0, args.samples, args.batch_size)):
        n = min(args.batch_size, args.samples - start)
        records = data.records(args.split, index, segments, n)
        batch = data.batch(args.split, index, segments, n)
        read = last_window(batch, window)
        truncated = truncated or read is not batch
        with torch.no_grad():
            out = model(input_ids=read["input_ids"], attention_mask=read["attention_mask"])
        hits = answer_accuracy(out.logits, read["input_ids"], read["answer_mask"]).tolist()
        for rec, hit in zip(records, hits):
            correct.append(hit)
            if story(rec) not in seen:
                unseen += 1
                unseen_correct += hit
    result = {
        "run": str(run), "task": cfg.task, "split": args.split, "segments": segments, "samples": len(correct),
        "accuracy": sum(correct) / len(correct), "train_steps": n_steps, "train_stories": len(seen),
        "test_stories_seen_in_training": len(correct) - unseen, "unseen_samples": unseen,
        "accuracy_unseen": unseen_correct / unseen if unseen else None, "truncated": truncated,
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
