"""The embedded default: the demo domains and tasks, the training recipe, the bundled checkpoint."""

import json
import os
import subprocess
import sys

import pytest

from ttscale.demo import DEMO_MODEL
from ttscale.demo.data import DOMAINS, SHOTS
from ttscale.demo.task import DemoTask, held_out_questions
from ttscale.routing.families import find_routers

RECIPES = os.path.join(os.path.dirname(__file__), "..", "recipes")


@pytest.mark.parametrize("shift", [False, True])
def test_demo_grader_accepts_gold_solutions_and_rejects_perturbed_ones(shift):
    task = DemoTask(shift=shift)
    problems = task.load()
    assert len(problems) == 200 and len({p.id for p in problems}) == 200
    assert {p.meta["domain"] for p in problems} == ({"oct", "dup"} if shift else {"add", "rev", "sum"})
    for p in problems:
        assert p.prompt.count("Q: ") == SHOTS + 1 and p.prompt.endswith("A:")
        completion = f" {p.meta['solution']}\nQ: add 1 2\nA: 1+2=3; = 999"
        assert task.grade(task.extract(completion, p), p)
        wrong = p.answer[:-1] + ("x" if p.answer[-1] != "x" else "y")
        assert not task.grade(task.extract(f" {p.meta['solution'].rsplit('= ', 1)[0]}= {wrong}", p), p)
    assert task.extract(" 3+4=7; no answer", problems[0]) is None


def test_splits_differ_and_are_reproducible():
    test, validation = DemoTask(split="test").load(), DemoTask(split="validation").load()
    assert [p.prompt for p in test] == [p.prompt for p in DemoTask(split="test").load()]
    assert not {p.meta["question"] for p in test} & {p.meta["question"] for p in validation}
    with pytest.raises(ValueError, match="splits"):
        DemoTask(split="train")


def test_domain_solutions_are_correct():
    import random

    rng = random.Random(0)
    for _ in range(200):
        question, solution = DOMAINS["add"](rng)
        _, a, b = question.split()
        assert solution.endswith(f"= {int(a) + int(b)}")
        question, solution = DOMAINS["oct"](rng)
        _, a, b = question.split()
        assert solution.endswith(f"= {oct(int(a, 8) + int(b, 8))[2:]}")
        question, solution = DOMAINS["dup"](rng)
        assert solution.endswith("= " + "".join(c * 2 for c in reversed(question.split()[1])))


def test_mini_training_run_is_deterministic_and_produces_a_loadable_moe(tmp_path):
    outs = [tmp_path / "mini", tmp_path / "again"]
    procs = [subprocess.Popen([sys.executable, os.path.join(RECIPES, "train_demo_model.py"), "--steps", "3",
                               "--batch", "4", "--threads", "1", "--out", str(out)], stderr=subprocess.PIPE,
                              stdout=subprocess.DEVNULL, text=True)
             for out in outs]                          # side by side: start-up dominates, one thread each
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    out = outs[0]
    assert (out / "model.safetensors").read_bytes() == (outs[1] / "model.safetensors").read_bytes()
    from ttscale.backends.hf import HFBackend

    backend = HFBackend(str(out))
    assert backend.info.family == "olmoe" and json.loads((out / "training.json").read_text())["steps"] == 3


def test_training_corpus_never_contains_held_out_questions():
    import random
    import re

    from ttscale.demo.data import training_sequence

    held_out, rng = held_out_questions(), random.Random(0)
    assert len(held_out) > 700
    seen = {q for _ in range(3000) for q in re.findall(r"Q: (.*)\n", training_sequence(rng, held_out))}
    assert seen and not seen & held_out
    rng = random.Random(0)
    assert {q for _ in range(3000) for q in re.findall(r"Q: (.*)\n", training_sequence(rng, set()))} & held_out


def test_bundled_checkpoint_loads_offline_and_is_supported():
    from transformers import AutoModelForCausalLM

    assert DEMO_MODEL.is_dir(), "the demo checkpoint ships with the package"
    assert sum(f.stat().st_size for f in DEMO_MODEL.iterdir()) <= 10 * 2 ** 20
    model = AutoModelForCausalLM.from_pretrained(DEMO_MODEL)
    assert {site.rule.family for site in find_routers(model)} == {"olmoe"}


def test_run_with_no_model_or_task_uses_the_embedded_default(tmp_path, cli):
    out = tmp_path / "default"
    code, _, err = cli("run", "--limit", "5", "--out", out)
    assert code == 0, err
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in records) == [f"demo/test/{i}" for i in range(5)]    # in the order they finish
    assert all(r["correct"] in (True, False) for r in records)
