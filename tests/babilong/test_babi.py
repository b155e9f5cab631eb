"""The bAbI parser, on hand-made text and on the real task files."""

import pytest

from rmt.babilong import load_babi, parse_babi
from rmt.babilong.tasks import TASKS
from rmt.errors import UsageError

STORY = """1 Mary moved to the bathroom.
2 John went to the hallway.
3 Where is Mary? \tbathroom\t1
4 Daniel went back to the hallway.
5 Where is Daniel? \thallway\t4
1 Sandra travelled to the office.
2 Sandra went to the bathroom.
3 Where is Sandra? \tbathroom\t2
"""


def test_parse_keeps_facts_up_to_question_and_drops_earlier_questions():
    a, b, c = parse_babi(STORY)
    assert a.facts == ["Mary moved to the bathroom.", "John went to the hallway."]
    assert (a.question, a.answer, a.supporting) == ("Where is Mary?", "bathroom", [0])
    # the earlier question line is gone; line 4 is the third fact
    assert b.facts == a.facts + ["Daniel went back to the hallway."]
    assert b.supporting == [2]
    # numbering restarted: a new story
    assert c.facts == ["Sandra travelled to the office.", "Sandra went to the bathroom."]
    assert c.supporting == [1]


def test_parse_multiple_supporting_ids_map_past_questions():
    text = "1 A x.\n2 Q1?\ta\t1\n3 B y.\n4 Q2?\tb\t3 1\n"
    _, second = parse_babi(text)
    assert second.facts == ["A x.", "B y."] and second.supporting == [1, 0]


@pytest.mark.parametrize("bad", ["x Mary went.\n", "1 Where?\tkitchen\t7\n", "1 Where?\tkitchen\n"])
def test_parse_errors_name_the_line(bad):
    with pytest.raises(ValueError, match=r":1: "):
        parse_babi(bad)


def test_all_real_task_files_parse(babi_dir):
    for task in TASKS:
        for split in ("train", "test"):
            samples = load_babi(task, split, babi_dir)
            assert len(samples) == 1000, (task, split)  # bAbI 1k: 1000 questions per file
            for s in samples:
                assert s.question and s.answer and s.supporting
                assert all(0 <= i < len(s.facts) for i in s.supporting)


def test_first_qa1_test_samples_match_the_file(babi_dir):
    samples = load_babi("qa1", "test", babi_dir)
    assert samples[0].facts == ["John travelled to the hallway.", "Mary journeyed to the bathroom."]
    assert (samples[0].question, samples[0].answer) == ("Where is John?", "hallway")
    assert samples[1].facts[-1] == "John moved to the bedroom." and samples[1].answer == "bathroom"
    assert samples[1].supporting == [1]


def test_load_babi_errors(babi_dir, tmp_path):
    with pytest.raises(ValueError, match="qa21"):
        load_babi("qa21", "test", babi_dir)
    with pytest.raises(ValueError, match="dev"):
        load_babi("qa1", "dev", babi_dir)
    with pytest.raises(UsageError, match="bAbI file not found"):
        load_babi("qa1", "test", tmp_path)
