"""BABILong on your machine: bAbI facts (files or a seeded world simulator) hidden in long
background text, at any length, and scored like the leaderboard.

    from rmt.babilong import generate, load_babi, score
    records = generate(task="qa1", length="4k", samples=10, seed=0)
    ok = score("The kitchen.", target="kitchen", question="Where is Mary?", task="qa1")

This package never imports torch or the model side.
"""

from rmt.babilong.babi import load_babi, parse_babi
from rmt.babilong.generator import generate, iter_records
from rmt.babilong.scoring import TASK_LABELS, score
from rmt.babilong.tasks import TASKS

__all__ = ["generate", "iter_records", "load_babi", "parse_babi", "score", "TASK_LABELS", "TASKS"]
