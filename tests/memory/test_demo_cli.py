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
