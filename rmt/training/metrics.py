"""A run's metrics file (``runs.METRICS_FILE``): append-only JSONL, cut back to a checkpoint on resume,
mirrored to TensorBoard with ``--tensorboard``."""

from __future__ import annotations

import json
from pathlib import Path

from rmt.atomic import atomic_file
from rmt.errors import UsageError


class MetricsLog:
    """Append-only JSONL (one object per line); on resume, lines after the checkpoint are dropped so
    the file reads as if the run had never stopped."""

    def __init__(self, path: Path, enabled: bool, tensorboard_dir: Path | None = None):
        self.path, self.enabled = path, enabled
        self.tb = None
        if enabled and tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter  # lazy: the `tensorboard` extra
            except ImportError:
                raise UsageError("--tensorboard needs the tensorboard package: pip install 'rmt[tensorboard]'") from None
            self.tb = SummaryWriter(str(tensorboard_dir))

    def truncate_after(self, step: int) -> None:
        if not self.enabled or not self.path.exists():
            return
        kept = []
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        for number, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
                record_step = record["step"]
            except (ValueError, UnicodeDecodeError, KeyError, TypeError):
                if number == len(lines):  # no newline after it: a kill cut the last append short
                    continue
                raise UsageError(f"{self.path}, line {number}: not a metrics record (a JSON object with a step); "
                                 f"remove the line to resume") from None
            if record_step <= step:
                kept.append(raw.decode("utf-8"))
        atomic_file(self.path, lambda tmp: Path(tmp).write_text("".join(line + "\n" for line in kept)))

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "step":
                    self.tb.add_scalar(f"{record['type']}/{key}", value, record["step"])

    def close(self):
        if self.tb is not None:
            self.tb.close()
