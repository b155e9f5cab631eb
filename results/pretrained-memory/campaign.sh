#!/usr/bin/env bash
# The campaign's one training command (issue: memory on the pretrained model, trained as a campaign
# that accumulates). Run it again and again: it resumes its run dir when there is one; on a new
# machine it starts from the committed snapshot (results/pretrained-memory/$TASK) with a fresh
# optimizer and a short warm-up; else from the base model.
#   results/pretrained-memory/campaign.sh [RUN_DIR]       (default /work/runs/campaign-detect)
# Snapshot for a commit: python results/pretrained-memory/snapshot.py RUN_DIR results/pretrained-memory/detect
set -euo pipefail
cd "$(dirname "$0")/../.."
TASK=detect
RUN=${1:-/work/runs/campaign-$TASK}
SNAPSHOT=results/pretrained-memory/$TASK
ARGS=(--lora-rank 8 --lora-alpha 32 --task $TASK --background ../shared/data/background
      --memory-kind armt --d-mem 64 --num-mem-tokens 16 --segment-size 128 --curriculum 2,4,8 --stage-steps 600
      --stage-threshold 0.95 --batch-size 8 --lr 3e-4 --weight-decay 1e-3 --eval-every 50 --eval-samples 64
      --eval-batch-size 16 --save-every 50 --save-every-minutes 10 --log-every 5 --threads 2 --seed 0 --no-progress)
if [ -d "$RUN/checkpoints" ]; then
  exec rmt train --model smollm2-135m "${ARGS[@]}" --warmup-steps 20 --output-dir "$RUN" --resume
elif [ -f "$SNAPSHOT/adapter_model.safetensors" ]; then
  # continues the committed adapter (its memory settings must match ARGS); the optimizer restarts
  exec rmt train --model "$SNAPSHOT" "${ARGS[@]}" --warmup-steps 10 --output-dir "$RUN"
else
  exec rmt train --model smollm2-135m "${ARGS[@]}" --warmup-steps 20 --output-dir "$RUN"
fi
