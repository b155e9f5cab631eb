"""The runnable example in docs/memory.md runs and its stated equality holds."""

import re
from pathlib import Path

import torch

DOC = Path(__file__).resolve().parents[2] / "docs" / "memory.md"


def test_docs_example_runs(tmp_path):
    code = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    code = code.replace("/tmp/rmt-demo-ckpt", str(tmp_path / "ckpt"))
    scope = {}
    exec(compile(code, str(DOC), "exec"), scope)
    model, ids = scope["model"], scope["ids"]
    with torch.no_grad():
        whole = model(ids)
    torch.testing.assert_close(torch.cat([scope["first"].logits, scope["rest"].logits], 1), whole.logits, atol=1e-5, rtol=0)
    assert scope["new_tokens"].shape == (1, 5)
    torch.testing.assert_close(scope["state"].memory, whole.memory[:1], atol=1e-5, rtol=0)
