"""`task.extract`: how an answer is taken from a completion, overriding the task's own extraction.

    last-line        the completion's last non-empty line (a JSONL task's own rule)
    after:MARKER     the text after the last MARKER, to the end of its line (`after:= `, `after:####`)
    regex:PATTERN    the first group of the last match of PATTERN (the whole match if it has no group)

Every rule strips spaces around the answer and gives None when there is none (no marker, no match,
an empty text), so an unanswered sample does not vote.
"""

from __future__ import annotations

import re
from typing import Callable

RULES = ("last-line", "after:MARKER", "regex:PATTERN")
Extract = Callable[[str], "str | None"]


def last_line(completion: str) -> str | None:
    lines = [line.strip() for line in completion.strip().splitlines() if line.strip()]
    return lines[-1] if lines else None


def parse(rule: str) -> Extract:
    """The extraction function of a `task.extract` value; a ValueError names what is wrong with it."""
    kind, colon, argument = rule.partition(":")
    if rule == "last-line":
        return last_line
    if kind == "after" and colon and argument:
        return lambda completion: _after(completion, argument)
    if kind == "regex" and colon and argument:
        try:
            pattern = re.compile(argument)
        except re.error as e:
            raise ValueError(f"invalid setting task.extract={rule!r}: not a regular expression ({e})") from None
        return lambda completion: _last_match(completion, pattern)
    raise ValueError(f"invalid setting task.extract={rule!r}: must be one of {', '.join(RULES)}")


def _after(completion: str, marker: str) -> str | None:
    at = completion.rfind(marker)
    if at < 0:
        return None
    return completion[at + len(marker):].split("\n", 1)[0].strip() or None


def _last_match(completion: str, pattern: re.Pattern) -> str | None:
    last = None
    for last in pattern.finditer(completion):
        pass
    if last is None:
        return None
    text = last.group(1) if pattern.groups else last.group(0)
    return (text or "").strip() or None
