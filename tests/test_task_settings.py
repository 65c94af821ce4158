"""Your own JSONL task with the bundled model: stop strings (`task.stop`, a row's `stop`) and how the answer
is taken (`task.extract`), for grading and as the vote key."""

import json

import pytest

from ttscale.demo.task import DemoTask
from ttscale.tasks import extract

DEMO_LIKE = ["--set", "task.stop=\\n", "--set", "task.extract=after:= "]


@pytest.fixture(scope="module")
def demo_file(tmp_path_factory):
    """The first demo problems as a JSONL task of the user's own."""
    path = tmp_path_factory.mktemp("mine") / "demo.jsonl"
    path.write_text("".join(json.dumps({"id": f"mine/{i}", "prompt": p.prompt, "answer": p.answer}) + "\n"
                            for i, p in enumerate(DemoTask().load(8))))
    return path


def records(out):
    return [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]


def test_the_demo_model_scores_on_its_own_problems_as_jsonl_as_on_the_demo_task(cli, demo_file, tmp_path):
    assert cli("run", "--task", "demo", "--limit", 8, "--out", tmp_path / "demo")[0] == 0
    code, _, err = cli("run", "--task", demo_file, *DEMO_LIKE, "--out", tmp_path / "mine")
    assert code == 0, err
    demo, mine = records(tmp_path / "demo"), records(tmp_path / "mine")
    assert [r["prediction"] for r in mine] == [r["prediction"] for r in demo]
    assert [r["correct"] for r in mine] == [r["correct"] for r in demo] and sum(r["correct"] for r in mine) >= 4
    assert all(s["finish_reason"] == "stop" and "\n" not in s["text"] for r in mine for s in r["samples"])
    summaries = [json.loads((tmp_path / run / "summary.json").read_text()) for run in ("demo", "mine")]
    assert summaries[0]["accuracy"] == summaries[1]["accuracy"]
    assert summaries[1]["config"]["settings"]["task"] == {**summaries[1]["config"]["settings"]["task"],
                                                          "stop": ["\n"], "extract": "after:= "}


def test_votes_are_over_answers_not_whole_lines(cli, demo_file, tmp_path):
    code, _, err = cli("run", "--task", demo_file, "--limit", 2, "--strategy", "sc", "--n", 4, *DEMO_LIKE,
                       "--set", "sample.max_new_tokens=64", "--out", tmp_path / "sc")
    assert code == 0, err
    for r in records(tmp_path / "sc"):
        assert all(s["key"] == s["answer"] and ";" not in (s["answer"] or "") for s in r["samples"])
        assert r["prediction"] == r["samples"][r["chosen"]]["answer"]


def test_a_rows_own_stop_ends_its_completion(cli, tmp_path):
    problem = DemoTask().load(1)[0]
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"id": "a", "prompt": problem.prompt, "answer": problem.answer, "stop": "\n"}) + "\n"
                    + json.dumps({"id": "b", "prompt": problem.prompt, "answer": problem.answer}) + "\n")
    code, _, err = cli("run", "--task", path, "--set", "sample.max_new_tokens=48", "--out", tmp_path / "run")
    assert code == 0, err
    stopped, run_on = (r["samples"][0] for r in records(tmp_path / "run"))
    assert stopped["finish_reason"] == "stop" and run_on["finish_reason"] == "length"
    assert run_on["text"].startswith(stopped["text"] + "\n")


@pytest.mark.parametrize("value", ['"\\n"', '["\\n"]', "\\n"])
def test_task_stop_takes_a_string_or_a_json_list(value):
    from ttscale.spec import resolve_settings, parse_spec

    assert resolve_settings(parse_spec("greedy")[0], [f"task.stop={value}"])["task"].stop == ["\n"]


def test_extract_rules():
    completion = " 7+5=12 c1; 4+6+1=11 c1; 3+2+1=6; = 612\nQ: add 1 2\nA: 1+2=3; = 3 "
    assert extract.parse("last-line")(completion) == "A: 1+2=3; = 3"
    assert extract.parse("after:= ")(completion) == "3"
    assert extract.parse("after:= ")(completion.split("\n")[0]) == "612"
    assert extract.parse("after:####")(completion) is None
    assert extract.parse(r"regex:=\s*(\d+)$")("= 41\n= 612") == "612"
    assert extract.parse(r"regex:\d+")("a 12 b 34 c") == "34"
    assert extract.parse("regex:(x)?y")("y") is None


@pytest.mark.parametrize("item, message", [
    ("task.extract=regex:(", "not a regular expression"),
    ("task.extract=first-line", "must be one of last-line, after:MARKER, regex:PATTERN"),
    ("task.extract=after:", "must be one of"),
    ("task.stop=[1]", "task.stop"),
    ('task.stop=[""]', "task.stop"),
])
def test_bad_task_settings_are_one_line_before_anything_runs(cli, demo_file, tmp_path, item, message):
    code, _, err = cli("run", "--task", demo_file, "--set", item, "--out", tmp_path / "x")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "x").exists()


def test_grade_takes_the_same_extract(cli, demo_file, tmp_path):
    answers = tmp_path / "answers.jsonl"
    problems = [json.loads(line) for line in demo_file.read_text().splitlines()]
    answers.write_text("".join(json.dumps({"id": p["id"], "completion": f" steps; = {p['answer']}\nQ: next"}) + "\n"
                               for p in problems))
    code, out, _ = cli("grade", "--task", demo_file, "--answers", answers)
    assert code == 0 and "0/8 correct" in out
    code, out, _ = cli("grade", "--task", demo_file, "--answers", answers, "--set", "task.extract=after:= ")
    assert code == 0 and "8/8 correct, accuracy 1.000" in out
    code, _, err = cli("grade", "--task", demo_file, "--answers", answers, "--set", "sc.temperature=1")
    assert code == 2 and "only task.* settings" in err


def test_a_row_with_question_instead_of_prompt_says_so(cli, tmp_path):
    path = tmp_path / "theirs.jsonl"
    path.write_text(json.dumps({"id": 1, "question": "2+2?", "target": "4"}) + "\n")
    code, _, err = cli("run", "--task", path, "--out", tmp_path / "x")
    assert code == 2 and "no 'prompt' key" in err and "did you mean to call 'question' 'prompt'?" in err, err
    assert not (tmp_path / "x").exists()
