"""The no-memory baseline reads the last window of a longer input (truncation on the left)."""

import torch

from rmt.training.trainer import evaluate, last_window
from rmt.training.tasks import TaskData


def test_last_window_keeps_exactly_each_rows_last_tokens():
    ids = torch.tensor([[1, 2, 3, 4, 5, 6, 7], [11, 12, 13, 14, 0, 0, 0], [21, 22, 0, 0, 0, 0, 0]])
    mask = (ids != 0).long()
    labels = torch.where(mask.bool(), ids + 100, torch.full_like(ids, -100))
    answer = torch.zeros_like(ids, dtype=torch.bool)
    answer[0, 5], answer[1, 2] = True, True
    cut = last_window({"input_ids": ids, "attention_mask": mask, "labels": labels, "answer_mask": answer}, 3)
    assert cut["input_ids"].tolist() == [[5, 6, 7], [12, 13, 14], [21, 22, 0]]
    assert cut["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 1], [1, 1, 0]]
    assert cut["labels"].tolist() == [[105, 106, 107], [112, 113, 114], [121, 122, -100]]
    assert cut["answer_mask"].tolist() == [[False, True, False], [False, True, False], [False, False, False]]
    same = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    assert last_window(same, 7) is same and last_window(same, None) is same


def test_evaluate_with_a_window_scores_the_model_on_the_last_window(tiny_config):
    """evaluate(window=W) on inputs longer than W equals running the model on each row's last W tokens."""
    from rmt.training.trainer import build_base_model, build_tokenizer

    cfg = tiny_config(memory=False)
    tokenizer = build_tokenizer(cfg)
    data = TaskData(cfg, tokenizer)
    torch.manual_seed(0)
    model = build_base_model(cfg, tokenizer, 32).eval()
    calls = []
    original = model.forward

    def spy(input_ids=None, attention_mask=None, labels=None, **kw):
        calls.append((input_ids.clone(), attention_mask.clone()))
        return original(input_ids=input_ids, attention_mask=attention_mask, labels=labels, **kw)

    model.forward = spy
    result = evaluate(model, data, segments=4, samples=4, batch_size=4, window=32)
    assert result["truncated"] and 0 <= result["accuracy"] <= 1
    batch = data.batch("eval", 0, 4, 4)
    (seen_ids, seen_mask), = calls
    for row in range(4):
        real = batch["input_ids"][row][batch["attention_mask"][row].bool()]
        assert len(real) > 32
        assert seen_ids[row][seen_mask[row].bool()].tolist() == real[-32:].tolist()
