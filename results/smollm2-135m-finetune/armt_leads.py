"""Issue 17 item 3: the leads about ARMT's length generalisation, measured on a trained ARMT run.

For the run's own evaluation stories (``TaskData.batch("eval", ...)``, the trainer's), segment by
segment (sequential schedule), averaged over layers and rows:

* ``key_cosine``: mean pairwise cosine of the keys φ(o W_k) the memory tokens write (1.0 = they
  all write one key, so ``z`` saturates after one segment and γ is 0 from then on);
* ``gamma``: mean γ = clip(1 - z·k, 0, 1) of the write (how much ``z`` still grows);
* ``beta``: mean write gate β;
* ``read_ratio``: |what A returns| / |the residual stream| at the token positions (how loud the
  memory's read is against the model's own activations);

and accuracy (answer tokens = argmax, as the trainer) with every segment writing (``all``) and
with only the segments that hold a supporting fact writing (``facts``: the other segments' writes
are dropped, per row), the intervention of issue 17's lead. Not a test.

    python results/smollm2-135m-finetune/armt_leads.py RUN/final --segments 4,16,64 --samples 20
"""

import argparse
import json
import time
from collections import defaultdict

import torch

from rmt.memory.associative import keys
from rmt.training.tasks import TaskData, answer_accuracy

from length_eval import load_run  # this folder's: the run's model and its TaskData


def fact_segments(data: TaskData, index: int, segments: int, n: int) -> list[set]:
    """Per row of ``data.batch("eval", index, segments, n)``: the segments that hold a supporting fact."""
    seg = data.cfg.rmt.segment_size
    records = data.records("eval", index, segments, n)
    return [{t // seg for t in data.example(r, segments)["fact_tokens"]} for r in records]


def run(model, data, segments: int, samples: int, batch_size: int, policy: str):
    kind = model.memory_kind
    stats = defaultdict(lambda: defaultdict(list))  # segment -> name -> values
    current = {"s": -1, "allow": None}
    orig_segment, orig_read, orig_write = kind.segment, kind.read, kind.write

    def segment(base, state, tokens, lengths, logits_from=0):
        current["s"] += 1
        return orig_segment(base, state, tokens, lengths, logits_from)

    def read(i, state, hidden):
        out = orig_read(i, state, hidden)
        stats[current["s"]]["read_ratio"].append(float(out.norm(dim=-1).mean() / hidden.norm(dim=-1).mean()))
        return out

    def write(i, state, outputs):
        A, z = orig_write(i, state, outputs)
        k = keys(outputs, kind.w_key[i], kind.heads, kind.nu)  # (batch, heads, m, key_dim), unit norm
        m = k.shape[-2]
        cos = k @ k.transpose(-1, -2)
        stats[current["s"]]["key_cosine"].append(float((cos.sum((-1, -2)) - m).mean() / (m * (m - 1))))
        stats[current["s"]]["gamma"].append(float((1 - k @ state.z[:, i].unsqueeze(-1)).clamp(0, 1).mean()))
        beta = torch.sigmoid(outputs @ kind.w_gate[i] + kind.b_gate[i])
        stats[current["s"]]["beta"].append(float(beta.mean()))
        if policy == "facts":
            allow = torch.tensor([current["s"] in facts for facts in current["allow"]], device=A.device)
            A = torch.where(allow[:, None, None, None], A, state.A[:, i])
            z = torch.where(allow[:, None, None], z, state.z[:, i])
        return A, z

    kind.segment, kind.read, kind.write = segment, read, write
    correct = count = 0
    try:
        for index, start in enumerate(range(0, samples, batch_size)):
            n = min(batch_size, samples - start)
            batch = data.batch("eval", index, segments, n)
            current["s"], current["allow"] = -1, fact_segments(data, index, segments, n)
            with torch.no_grad():
                out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"],
                            output_logits=False, diagonal=False)
            positions = torch.cat([torch.arange(s, s + p.shape[1]) for s, p in out.label_logits])
            logits = torch.cat([p for _, p in out.label_logits], dim=1)
            correct += float(answer_accuracy(logits, batch["input_ids"], batch["answer_mask"], positions).sum())
            count += n
    finally:
        kind.segment, kind.read, kind.write = orig_segment, orig_read, orig_write
    by_segment = {s: {name: round(sum(v) / len(v), 4) for name, v in values.items()} for s, values in sorted(stats.items())}
    return correct / count, by_segment


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--segments", default="4,16,64")
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=10)
    ap.add_argument("--policies", default="all,facts")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model, data = load_run(args.model, bf16=True)
    for n in [int(x) for x in args.segments.split(",")]:
        for policy in args.policies.split(","):
            start = time.time()
            accuracy, by_segment = run(model, data, n, args.samples, args.batch_size, policy)
            shown = {s: v for s, v in by_segment.items() if s in (0, 1, 2, 3) or s == n - 1 or s in (7, 15, 31, 63, 127)}
            print(json.dumps({"segments": n, "policy": policy, "samples": args.samples, "accuracy": round(accuracy, 4),
                              "seconds": round(time.time() - start, 1), "by_segment": shown}), flush=True)


if __name__ == "__main__":
    main()
