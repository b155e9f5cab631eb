"""`rmt demo` streams through a small RMT and reports throughput and peak memory."""

import json
import subprocess
import sys


def test_demo_streams_the_requested_tokens():
    code = "from rmt.cli import main; main(['demo', '--tokens', '3000', '--segment-size', '64', '--mem-tokens', '4', '--hidden', '32', '--vocab', '100', '--chunk', '700'])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["tokens"] == 3000
    assert report["segments"] == 47  # ceil(3000 / 64)
    assert report["memory_shape"] == [1, 4, 32] and report["memory_finite"]
    assert report["tokens_per_s"] > 0 and report["peak_rss_mib"] > 0
    assert "streaming" in result.stderr  # the progress bar


def test_demo_streams_through_an_armt_checkpoint(tmp_path):
    from rmt.cli.demo import run_demo
    from tests.memory.test_armt import armt

    armt("gpt2").save_pretrained(tmp_path)
    report = run_demo(tokens=100, segment_size=0, mem_tokens=0, layers=1, hidden=1, vocab=2, self_retrieval=False,
                      checkpoint=str(tmp_path), chunk=30, seed=0, threads=1, progress=False)
    assert report["tokens"] == 100 and report["segments"] == 17  # ceil(100 / 6)
    assert report["memory_shape"] == [1, 2, 2, 24, 16] and report["memory_finite"]  # A: batch, layers, heads, key, value
