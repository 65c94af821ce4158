"""Answer extraction and grading: maths by math-verify, numbers, letters, code."""

import threading

import pytest

from ttscale.tasks.base import Problem
from ttscale.tasks.choice import MMLU
from ttscale.tasks.code import HumanEval, strip_fences
from ttscale.tasks.math import GSM8K, Math500, canonical, equivalent, last_boxed, normalise_number


@pytest.mark.parametrize("gold, prediction, same", [
    (r"\frac{1}{2}", "0.5", True),
    (r"(3, \frac{\pi}{2})", r"\left( 3, \frac{\pi}{2} \right)", True),
    ("1,000", "1000", True),
    ("x=2", "3", False),
    (r"\frac{\sqrt{3}}{2}", r"\frac{1}{2}", False),
])
def test_math_equivalence(gold, prediction, same):
    assert equivalent(gold, prediction) is same


def test_math_verify_works_off_the_main_thread():
    results = []
    worker = threading.Thread(target=lambda: results.append((equivalent(r"\frac12", "0.5"), equivalent("2", "3"))))
    worker.start()
    worker.join(60)
    assert results == [(True, False)]


def test_equivalent_math_answers_share_a_voting_key():
    assert canonical("0.5") == canonical(r"\frac12") == canonical(r"\frac{1}{2}")
    assert canonical("2") != canonical("3")


def test_boxed_and_number_extraction():
    assert last_boxed(r"so \boxed{1} then \boxed{\frac{a}{b^{2}}} done") == r"\frac{a}{b^{2}}"
    assert last_boxed("no box") is None
    for text, number in [("1,000", "1000"), ("$18.", "18"), ("18 dollars", "18"), ("3.50", "3.5"), ("-7", "-7"),
                         ("none", None)]:
        assert normalise_number(text) == number


def test_gsm8k_extraction_and_grading():
    task, problem = GSM8K(), Problem(id="g", prompt="q", answer="1000")
    for completion in ["So 500*2 = 1,000.\nThe answer is 1,000.", "#### 1000", "it is $1000 dollars", r"\boxed{1000}"]:
        assert task.grade(task.extract(completion, problem), problem), completion
    assert not task.grade(task.extract("The answer is 999.", problem), problem)
    assert task.answer_key("1,000.") == task.answer_key("1000")


def test_math500_extraction_and_grading():
    task, problem = Math500(), Problem(id="m", prompt="q", answer=r"\frac{\pi}{2}")
    assert task.grade(task.extract(r"Thus $x = \boxed{\dfrac{\pi}{2}}$.", problem), problem)
    assert not task.grade(task.extract(r"\boxed{\pi}", problem), problem)
    assert task.extract("I do not know", problem) is None


def test_multiple_choice_letters():
    task = MMLU()
    problem = Problem(id="c", prompt="q", answer="B", meta={"labels": list("ABCD"), "choices": list("wxyz"),
                                                           "subject": "s"})
    for completion in ["The answer is B.", "B", "(B) because", "Answer is (B)", "I think it's C... no, the answer is B"]:
        assert task.extract(completion, problem) == "B", completion
    assert task.extract("The answer is a mystery", problem) is None
    assert not task.grade("C", problem) and task.grade("B", problem)


def test_code_fences_are_stripped_and_signatures_kept():
    assert strip_fences("Here:\n```python\ndef f():\n    return 1\n```\nDone") == "def f():\n    return 1\n"
    task = HumanEval()
    problem = Problem(id="h", prompt="import math\n\ndef f(x):\n    \"\"\"Root.\n    >>> f(4)\n    2.0\n    \"\"\"\n",
                      meta={"entry_point": "f", "test": "def check(c):\n    assert c(9) == 3.0\n"})
    body = task.extract("    return math.sqrt(x)\n", problem)
    whole = task.extract("```python\ndef f(x):\n    return math.sqrt(x)\n```", problem)
    assert body.startswith(problem.prompt) and whole.startswith("import math\ndef f(x):")
    assert task.grade(body, problem) and task.grade(whole, problem)
    assert not task.grade(task.extract("    return x\n", problem), problem)
    assert task.run(body + "\n" + task.visible_tests(problem)) == "passed"
    assert task.run(task.extract("    return 2.5\n", problem) + "\n" + task.visible_tests(problem)) != "passed"


def test_visible_tests_scorer_prefers_programs_that_pass_the_shown_examples():
    from ttscale.branch import Branch
    from ttscale.scorers import VisibleTests

    task = HumanEval()
    problem = Problem(id="h", prompt="def double(x):\n    \"\"\"Twice x.\n    >>> double(3)\n    6\n    \"\"\"\n",
                      meta={"entry_point": "double", "test": "def check(c):\n    assert c(5) == 10\n"})
    branches = [Branch(tokens=[], prompt_len=0, text=text) for text in
                ["    return x * 2\n", "    return x + 2\n", "```python\ndef double(x):\n    return 2 * x\n```"]]
    assert VisibleTests().score(branches, problem, task) == [1.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="needs a code task"):
        VisibleTests().score(branches, problem, MMLU())
