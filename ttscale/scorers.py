"""Scorers: a number per branch, higher is better, for best-of-N, weighted votes and beam pruning."""

from __future__ import annotations

from typing import Protocol, Sequence

from ttscale.backends.base import check_local_dir
from ttscale.branch import Branch
from ttscale.tasks.base import Problem, Task


class Scorer(Protocol):
    name: str

    def score(self, branches: Sequence[Branch], problem: Problem, task: Task) -> list[float]:
        """One score per branch; reward-model work is charged to the branch's compute."""


class MeanLogprob:
    """Mean log-prob of the generated tokens; free, as generation records them."""
    name = "logprob"

    def score(self, branches: Sequence[Branch], problem: Problem, task: Task) -> list[float]:
        return [sum(b.logprobs) / len(b.logprobs) if b.logprobs else float("-inf") for b in branches]


class SumLogprob:
    """Cumulative log-prob of the generated tokens (the classic beam score)."""
    name = "logprob_sum"

    def score(self, branches: Sequence[Branch], problem: Problem, task: Task) -> list[float]:
        return [sum(b.logprobs) for b in branches]


class RewardModel:
    """An outcome reward model: any `AutoModelForSequenceClassification` (hub id or local directory)
    reading the prompt and the completion; the score is its single logit (the last one if several)."""
    name = "rm"

    def __init__(self, model: str, device: str | None = None, batch_size: int = 8):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if not model:
            raise ValueError("the rm scorer needs a reward model: --set <search>.reward_model=HUB_ID_OR_DIR")
        check_local_dir(model, "reward model")
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model)
            self.model = AutoModelForSequenceClassification.from_pretrained(model, dtype=dtype)
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot load reward model {model!r}: {str(e).splitlines()[0]}") from None
        self.model.to(device).eval().requires_grad_(False)
        self.tokenizer.padding_side = "right"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.device, self.batch_size = device, batch_size
        self.params = sum(p.numel() for p in self.model.parameters())

    def text(self, b: Branch, problem: Problem, task: Task) -> str:
        messages = task.messages(problem) + [{"role": "assistant", "content": b.text}]
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(messages, tokenize=False)
        return "\n\n".join(m["content"] for m in messages)

    def score(self, branches: Sequence[Branch], problem: Problem, task: Task) -> list[float]:
        import torch

        scores: list[float] = []
        for start in range(0, len(branches), self.batch_size):
            chunk = branches[start:start + self.batch_size]
            batch = self.tokenizer([self.text(b, problem, task) for b in chunk], return_tensors="pt", padding=True,
                                   truncation=True).to(self.device)
            with torch.no_grad():
                logits = self.model(**batch).logits.float()
            scores += logits[:, -1].tolist()
            for b, n in zip(chunk, batch["attention_mask"].sum(-1).tolist()):
                b.compute.reward_tokens += n
                b.compute.reward_flops += 2.0 * self.params * n
        return scores


class VisibleTests:
    """1 if the extracted program passes the tests the prompt shows (HumanEval's docstring examples,
    MBPP's example assertion), else 0; run in the sandbox, candidates in parallel."""
    name = "tests"

    def score(self, branches: Sequence[Branch], problem: Problem, task: Task) -> list[float]:
        if not hasattr(task, "visible_tests"):
            raise ValueError(f"the tests scorer needs a code task (humaneval, mbpp), not {task.name}")
        from ttscale.tasks.code import sandbox

        programs = [task.extract(b.text, problem) for b in branches]
        runnable = [p + "\n\n" + task.visible_tests(problem) for p in programs if p is not None]
        results = iter(sandbox().run_many(runnable))
        return [0.0 if p is None else float(next(results) == "passed") for p in programs]


def make_scorer(name: str, reward_model: str = "") -> Scorer:
    if name == "logprob":
        return MeanLogprob()
    if name == "logprob_sum":
        return SumLogprob()
    if name == "rm":
        return RewardModel(reward_model)
    if name == "tests":
        return VisibleTests()
    raise ValueError(f"unknown scorer {name!r}; choose from: logprob, logprob_sum, rm, tests")
