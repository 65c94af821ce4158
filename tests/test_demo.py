"""The embedded default: the demo domains and tasks, the training recipe, the bundled checkpoint."""

import json
import os
import subprocess
import sys

import pytest

from ttscale.demo import DEMO_MODEL
from ttscale.demo.data import DOMAINS_ORDER, PARTNER, SHOTS, solved
from ttscale.demo.task import DemoTask, held_out_inputs
from ttscale.tasks.registry import TaskSettings, load_task
from ttscale.routing.families import find_routers

RECIPES = os.path.join(os.path.dirname(__file__), "..", "recipes")


@pytest.mark.parametrize("shift", ["none", "all", "mix"])
def test_demo_grader_accepts_gold_solutions_and_rejects_perturbed_ones(shift):
    task = DemoTask(shift=shift)
    problems = task.load()
    assert len(problems) == 400 and len({p.id for p in problems}) == 400
    assert {p.meta["domain"] for p in problems} == set(DOMAINS_ORDER)
    for p in problems:
        assert p.meta["cue"] == (PARTNER[p.meta["domain"]] if p.meta["shifted"] else p.meta["domain"])
        assert p.prompt.count(f"Q: {p.meta['cue']} ") == SHOTS + 1 and p.prompt.endswith("A:")
        completion = f"{task.reference(p)}Q: add 1 2\nA: 1+2=3; = 999"
        assert task.grade(task.extract(completion, p), p)
        wrong = p.answer[:-1] + ("x" if p.answer[-1] != "x" else "y")
        assert not task.grade(task.extract(f" {p.meta['solution'].rsplit('= ', 1)[0]}= {wrong}", p), p)
    assert task.extract(" 3+4=7; no answer", problems[0]) is None


def test_shift_changes_only_the_cues():
    plain, shifted = DemoTask().load(), DemoTask(shift="all").load()
    for a, b in zip(plain, shifted):
        assert a.answer == b.answer and a.meta["solution"] == b.meta["solution"]
        assert b.prompt == a.prompt.replace(f"Q: {a.meta['domain']} ", f"Q: {b.meta['cue']} ")


@pytest.mark.parametrize("seed", [-1, 5])
def test_demo_mix_is_half_shifted_problem_for_problem_and_rule_for_rule(seed):
    settings = TaskSettings(seed=seed)
    plain, shifted, mix = (load_task(name, settings).load() for name in ("demo", "demo-shift", "demo-mix"))
    assert mix[0].id == ("demo-mix/test/0" if seed == -1 else "demo-mix/seed5/0")
    for p, s, m in zip(plain, shifted, mix):
        assert m.prompt == (s if m.meta["shifted"] else p).prompt and m.answer == p.answer
    for rule in DOMAINS_ORDER:
        flags = [m.meta["shifted"] for m in mix if m.meta["domain"] == rule]
        assert sum(flags) == len(flags) // 2
    assert [m.meta["shifted"] for m in mix[:16]] == [False] * 4 + [True] * 4 + [False] * 4 + [True] * 4


def test_splits_and_seeds_differ_and_are_reproducible():
    test, validation = DemoTask(split="test").load(), DemoTask(split="validation").load()
    fresh = DemoTask(seed=7).load()
    assert [p.prompt for p in test] == [p.prompt for p in DemoTask(split="test").load()]
    assert [p.prompt for p in fresh] == [p.prompt for p in DemoTask(seed=7).load()]
    inputs = [{p.meta["question"] for p in problems} for problems in (test, validation, fresh)]
    assert not inputs[0] & inputs[1] and len(inputs[2] - inputs[0] - inputs[1]) > 390
    assert fresh[0].id == "demo/seed7/0" and test[0].id == "demo/test/0"
    with pytest.raises(ValueError, match="splits"):
        DemoTask(split="train")


@pytest.mark.parametrize("shots", [0, 1, 8])
def test_shots_set_the_number_of_solved_examples(shots):
    task = load_task("demo-shift", TaskSettings(shots=shots, seed=3))
    for p in task.load(8):
        assert p.prompt.count("Q: ") == shots + 1 and p.prompt.count("\nA: ") == shots
    with pytest.raises(ValueError, match="task.shots"):
        load_task("demo", TaskSettings(shots=17))
    with pytest.raises(ValueError, match="task.seed"):
        load_task("gsm8k", TaskSettings(seed=3))


def test_domain_solutions_are_correct():
    import random

    rng = random.Random(0)
    for _ in range(300):
        for rule in DOMAINS_ORDER:
            question, solution = solved(rule, rng)
            cue, *given = question.split()
            assert cue == rule
            if rule in ("add", "oct"):
                base = 10 if rule == "add" else 8
                assert all(set(x) <= set("01234567") for x in given)
                total = sum(int(x, base) for x in given)
                assert solution.endswith("= " + (str(total) if base == 10 else oct(total)[2:]))
            else:
                repeat = 1 if rule == "rev" else 2
                assert solution.endswith("= " + "".join(c * repeat for c in reversed(given[0])))


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


def test_training_corpus_never_contains_held_out_inputs():
    import random

    from ttscale.demo.data import training_examples

    held_out, rng = held_out_inputs(), random.Random(0)
    assert len(held_out) > 700
    inputs = [q.split(" ", 1)[1] for _ in range(3000) for _, q, _ in training_examples(rng, held_out)]
    assert inputs and not set(inputs) & held_out
    rng = random.Random(0)
    assert {q.split(" ", 1)[1] for _ in range(3000) for _, q, _ in training_examples(rng, set())} & held_out


def test_bundled_checkpoint_loads_offline_and_is_supported():
    from transformers import AutoModelForCausalLM

    assert DEMO_MODEL.is_dir(), "the demo checkpoint ships with the package"
    assert sum(f.stat().st_size for f in DEMO_MODEL.iterdir()) <= 20 * 2 ** 20
    model = AutoModelForCausalLM.from_pretrained(DEMO_MODEL)
    assert {site.rule.family for site in find_routers(model)} == {"olmoe"}


def test_run_with_no_model_or_task_uses_the_embedded_default(tmp_path, cli):
    out = tmp_path / "default"
    code, _, err = cli("run", "--limit", "5", "--out", out)
    assert code == 0, err
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in records) == [f"demo/test/{i}" for i in range(5)]    # in the order they finish
    assert all(r["correct"] in (True, False) for r in records)


def test_fresh_split_from_the_command_line(tmp_path, cli):
    out = tmp_path / "fresh"
    code, _, err = cli("run", "--task", "demo-shift", "--set", "task.seed=11", "--limit", "3", "--out", out)
    assert code == 0, err
    ids = sorted(json.loads(line)["id"] for line in (out / "records.jsonl").read_text().splitlines())
    assert ids == [f"demo-shift/seed11/{i}" for i in range(3)]
    code, _, err = cli("run", "--task", "gsm8k", "--set", "task.seed=11", "--limit", "3", "--out", tmp_path / "x")
    assert code == 2 and "only the demo tasks" in err and not (tmp_path / "x").exists()
