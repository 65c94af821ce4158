"""Answer extraction and grading: maths by math-verify, numbers, letters, code."""

import threading
import time

import pytest

from ttscale.tasks.base import Problem
from ttscale.tasks.choice import MMLU
from ttscale.tasks.code import MBPP, HumanEval, strip_fences
from ttscale.tasks.math import GSM8K, Math500, canonical, equivalent, last_boxed, normalise_number
from ttscale.tasks.sources import human_eval_rows


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
    worker.join(120)
    assert results == [(True, False)]


def test_math_verify_time_limit_holds_in_concurrent_threads():
    """1000000! against 1000001! keeps sympy busy for ~10 s: cut off at 1 s, while another thread's
    quick comparisons still succeed, before, during and after the stuck worker is replaced."""
    equivalent("1", "1")                        # workers started outside the timed part
    results = {}

    def slow():
        start = time.monotonic()
        results["slow"] = (equivalent("1000000!", "1000001!", timeout=1), time.monotonic() - start)

    def quick():
        results["quick"] = [equivalent(r"\frac{1}{2}", "0.5", timeout=30) for _ in range(5)]

    threads = [threading.Thread(target=slow), threading.Thread(target=quick)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    same, seconds = results["slow"]
    assert same is False and seconds < 5
    assert results["quick"] == [True] * 5
    assert equivalent("2", "2.0") and canonical("0.5") == canonical(r"\frac12")


def test_equivalent_math_answers_share_a_voting_key():
    assert canonical("0.5") == canonical("0.50") == canonical(r"\frac12") == canonical(r"\frac{1}{2}")
    assert canonical("2.0") == canonical("2") and canonical("1,000") == canonical("1000")
    assert canonical("2") != canonical("3")


def test_boxed_and_number_extraction():
    assert last_boxed(r"so \boxed{1} then \boxed{\frac{a}{b^{2}}} done") == r"\frac{a}{b^{2}}"
    assert last_boxed("no box") is None
    for text, number in [("1,000", "1000"), ("$18.", "18"), ("18 dollars", "18"), ("3.50", "3.5"), ("-7", "-7"),
                         ("none", None)]:
        assert normalise_number(text) == number


def test_gsm8k_extraction_and_grading():
    task, problem = GSM8K(), Problem(id="g", prompt="q", answer="1000")
    for completion in ["So 500*2 = 1,000.\nThe answer is 1,000.", "#### 1000", "it is $1000 dollars", r"\boxed{1000}",
                       "The answer is 1000 apples, since 10 * 100 = 1000 and 10 > 9.", "The answer is: $1,000.00"]:
        assert task.grade(task.extract(completion, problem), problem), completion
    assert not task.grade(task.extract("The answer is 999.", problem), problem)
    assert not task.grade(task.extract("The answer is 999, not 1000.", problem), problem)
    assert task.answer_key("1,000.") == task.answer_key("1000")


def test_math500_gold_comes_from_the_solution_where_the_answer_field_is_damaged():
    row = {"problem": "List the primes between 2 and 10.", "answer": "357",
           "solution": r"They are $\boxed{3}$... no: $\boxed{3, 5, 7}$."}
    problem = Math500().problem(0, row)
    assert problem.answer == "3, 5, 7"
    assert Math500().grade("3, 5, 7", problem) and not Math500().grade("357", problem)


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
    chatty = task.extract("Sure! Here it is:\n\ndef f(x):\n    return math.sqrt(x)\n", problem)
    assert body.startswith(problem.prompt) and whole.startswith(problem.prompt)
    assert task.grade(body, problem) and task.grade(whole, problem) and task.grade(chatty, problem)
    assert not task.grade(task.extract("    return x\n", problem), problem)
    assert task.run(body + "\n" + task.visible_tests(problem)) == "passed"
    assert task.run(task.extract("    return 2.5\n", problem) + "\n" + task.visible_tests(problem)) != "passed"


def test_a_whole_function_keeps_the_prompts_helpers():
    """HumanEval/10's prompt defines is_palindrome, which a whole make_palindrome may call."""
    task = HumanEval()
    problem = next(task.problem(i, r) for i, r in enumerate(human_eval_rows()) if r["task_id"] == "HumanEval/10")
    completion = ("```python\ndef make_palindrome(string: str) -> str:\n    for i in range(len(string) + 1):\n"
                  "        if is_palindrome(string[i:]):\n            return string + string[:i][::-1]\n```")
    assert task.grade(task.extract(completion, problem), problem)
    assert not task.grade(task.extract(completion.replace("[::-1]", ""), problem), problem)


def test_mbpp_programs_with_prose_around_them():
    task = MBPP()
    problem = Problem(id="m", prompt="Write a function to add two numbers.", answer="def add(a, b):\n    return a + b",
                      meta={"tests": ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"], "setup": ""})
    for completion in ["```python\ndef add(a, b):\n    return a + b\n```\nThis adds them.",
                       "Here you go:\ndef add(a, b):\n    return a + b\n"]:
        assert task.grade(task.extract(completion, problem), problem), completion
    assert not task.grade(task.extract("```python\ndef add(a, b):\n    return a - b\n```", problem), problem)


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
