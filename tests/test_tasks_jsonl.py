"""A user's own JSONL file of {id, prompt, answer} as a task."""

import json

import pytest

from ttscale.tasks.registry import load_task


@pytest.fixture
def task_file(tmp_path):
    path = tmp_path / "mine.jsonl"
    rows = [{"id": "a", "prompt": "Capital of France?", "answer": "Paris"},
            {"id": 2, "prompt": "1000 + 234?", "answer": "1,234"},
            {"id": "c", "prompt": "Anything"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")
    return path


def test_jsonl_task_loads_prompts_and_grades_the_last_line(task_file):
    task = load_task(str(task_file))
    problems = task.load()
    assert [p.id for p in problems] == ["a", "2", "c"] and len(task.load(limit=2)) == 2
    assert task.messages(problems[0]) == [{"role": "user", "content": "Capital of France?"}]
    paris, number, ungraded = problems
    assert task.grade(task.extract("Let me think.\n  paris. \n", paris), paris)
    assert not task.grade(task.extract("Paris\nLyon", paris), paris)
    assert task.grade(task.extract("1234", number), number) and not task.grade("1243", number)
    assert task.grade("anything", ungraded) is None
    assert task.answer_key("1,234.") == task.answer_key("1234") and task.answer_key("PARIS") == task.answer_key("paris")


def test_jsonl_task_reports_bad_lines(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": "a", "prompt": "x"}\n{"id": "b"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        load_task(str(path)).load()
    with pytest.raises(ValueError, match="not found"):
        load_task(str(tmp_path / "missing.jsonl")).load()
