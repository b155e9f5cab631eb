"""The runnable examples in docs/memory.md (one per memory kind) run and their stated equalities hold."""

import re
from pathlib import Path

import torch

DOC = Path(__file__).resolve().parents[2] / "docs" / "memory.md"


def _examples():
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)


def _run(code, tmp_path):
    scope = {}
    exec(compile(code.replace("/tmp/rmt-demo-ckpt", str(tmp_path / "ckpt")), str(DOC), "exec"), scope)
    return scope


def test_there_is_an_example_per_memory_kind():
    kinds = [m.group(1) for code in _examples() if (m := re.search(r'memory_kind="([a-z-]+)"', code))]
    assert kinds == ["rmt", "rmt-r", "armt"]


def test_gated_write_example(tmp_path):
    (code,) = [code for code in _examples() if 'memory_write="gated"' in code]
    scope = _run(code, tmp_path)
    assert abs(scope["out"].write_rate.item() - float(torch.sigmoid(torch.tensor(1.0)))) < 1e-6


def test_rmt_example(tmp_path):
    scope = _run(_examples()[0], tmp_path)
    model, ids = scope["model"], scope["ids"]
    with torch.no_grad():
        whole = model(ids)
    torch.testing.assert_close(torch.cat([scope["first"].logits, scope["rest"].logits], 1), whole.logits, atol=1e-5, rtol=0)
    assert scope["new_tokens"].shape == (1, 5)
    torch.testing.assert_close(scope["state"].memory, whole.memory[:1], atol=1e-5, rtol=0)


def test_rmt_r_example(tmp_path):
    scope = _run(_examples()[1], tmp_path)
    out, rest = scope["out"], scope["rest"]
    torch.testing.assert_close(rest.memory, out.memory, atol=1e-5, rtol=0)
    torch.testing.assert_close(rest.retrieval_store.states, out.retrieval_store.states, atol=1e-5, rtol=0)
    assert tuple(out.retrieval_store.states.shape) == (1, 28, 64)


def test_armt_example(tmp_path):
    scope = _run(_examples()[2], tmp_path)
    state, sequential, model, ids = scope["state"], scope["sequential"], scope["model"], scope["ids"]
    assert tuple(scope["out"].memory.A.shape) == (2, 4, 1, 192, 64)
    torch.testing.assert_close(state.memory.A, sequential.memory.A, atol=1e-5, rtol=0)
    with torch.no_grad():
        whole = model(ids[:1], diagonal=False)
    torch.testing.assert_close(state.memory.A, whole.memory.A, atol=1e-5, rtol=0)
    assert scope["new_tokens"].shape == (1, 5)


def test_readme_tour_stream_equals_forward(tmp_path, monkeypatch):
    """The README tour's model reads a stream as its forward reads the whole input (eval mode: no dropout)."""
    monkeypatch.chdir(tmp_path)
    readme = DOC.parents[1] / "README.md"
    tour = re.search(r"## Tour\n+```python\n(.*?)```", readme.read_text(), re.S).group(1)
    scope = {}
    exec(compile(tour, str(readme), "exec"), scope)
    out, state = scope["out"], scope["state"]
    torch.testing.assert_close(state.logits, out.logits[:, -state.logits.shape[1]:], atol=1e-5, rtol=0)
