"""What an adaptation phase did to a problem, and what the best deltas could have done.

For each problem, three delta states are compared on the same forward over the prompt followed by the
task's reference solution: none (the router's own choice), the deltas continuous rerouting fits on the
prompt (the strategy's prefill phase), and the *oracle*: deltas fitted by the same phase (same layers
rule, learning rate and steps) on the prompt plus the reference solution, i.e. the most router deltas
of this kind can do for this problem. From each forward: the context NLL (the loss rerouting
minimises), the NLL of the reference solution, the routing entropy, and the share of each expert
among the picks made over the solution's tokens. The oracle's deltas are also used to generate from
the prompt alone, greedily, so its accuracy can stand beside the strategies'.

Transformers backend only (it needs the router-delta table and gradients); the task must give a
reference completion (`task.reference(problem)`: the demo tasks do).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor

from ttscale.backends.sampling import Sampling
from ttscale.branch import Branch, DeltaState
from ttscale.routing.deltas import RoutingRecord
from ttscale.routing.reroute import RerouteConfig
from ttscale.tasks.base import Problem, Task

STATES = ("none", "reroute", "oracle")


@dataclass
class Profile:
    """One forward over prompt + reference under some deltas."""
    context_nll: float          # mean next-token loss over the prompt (what rerouting minimises)
    reference_nll: float        # mean next-token loss over the reference solution
    entropy: float              # mean routing entropy over MoE layers and all tokens
    usage: list[list[float]]    # [layer][expert]: share of the top-k picks over the reference's tokens


def diagnose(backend, task: Task, problems: Sequence[Problem], cfg: RerouteConfig) -> list[dict[str, Any]]:
    """Per problem: the oracle's prediction and correctness, and a `Profile` under each of STATES."""
    if not hasattr(task, "reference"):
        raise ValueError(f"task {task.name!r} gives no reference solutions, so it has no oracle")
    out = []
    for start in range(0, len(problems), backend.batch_size):
        chunk = problems[start:start + backend.batch_size]
        prompts = [backend.new_branch(task.messages(p)) for p in chunk]
        reference = [backend.tokenizer(task.reference(p), add_special_tokens=False).input_ids for p in chunk]
        full = [Branch(tokens=b.tokens + ref, prompt_len=b.prompt_len) for b, ref in zip(prompts, reference)]
        rerouted = _fit(backend, [Branch(tokens=list(b.tokens), prompt_len=b.prompt_len) for b in prompts], cfg)
        oracle = _fit(backend, [Branch(tokens=list(b.tokens), prompt_len=len(b.tokens)) for b in full], cfg)
        states = {"none": [backend.zero_state() for _ in chunk], "reroute": rerouted, "oracle": oracle}
        profiles = {name: profile(backend, full, deltas) for name, deltas in states.items()}
        for b, state in zip(prompts, oracle):
            b.delta = state.clone()
        backend.extend(prompts, Sampling(temperature=0.0), stop=task.stop)
        for i, (p, b) in enumerate(zip(chunk, prompts)):
            prediction = task.extract(b.text, p)
            out.append({"id": p.id, "meta": p.meta, "oracle_prediction": prediction,
                        "oracle_correct": task.grade(prediction, p),
                        **{name: profiles[name][i].__dict__ for name in STATES}})
    return out


def _fit(backend, branches: list[Branch], cfg: RerouteConfig) -> list[DeltaState]:
    """The delta state one adaptation phase leaves on each branch, adapting over its whole context."""
    backend.adapt(branches, cfg)
    return [b.delta for b in branches]


@torch.no_grad()
def profile(backend, branches: Sequence[Branch], deltas: Sequence[DeltaState]) -> list[Profile]:
    """One forward per batch over each branch's tokens under its deltas; the reference is what follows
    `prompt_len`."""
    ids, mask = backend._batch(branches)
    table = backend.table
    table.load(torch.stack([d.delta for d in deltas]))
    table.record = RoutingRecord()
    try:
        logits = backend.model(input_ids=ids, attention_mask=mask,
                               position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits.float()
        record = table.record
    finally:
        table.record = None
    token_nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")
    width, slots = ids.shape[1], sorted(record.chosen)
    out = []
    for row, b in enumerate(branches):
        first = width - len(b.tokens)                  # left padding
        split = first + b.prompt_len
        nll = token_nll[row]
        chosen = [record.chosen[s][row, split:] for s in slots]
        out.append(Profile(
            context_nll=float(nll[first:split - 1].mean()), reference_nll=float(nll[split - 1:].mean()),
            entropy=float(torch.stack([record.entropy[s][row, first:].mean() for s in slots]).mean()),
            usage=[_shares(c, table.num_experts) for c in chosen]))
    return out


def _shares(chosen: Tensor, experts: int) -> list[float]:
    counts = torch.bincount(chosen.flatten(), minlength=experts).float()
    return (counts / counts.sum().clamp(min=1)).tolist()


def group_shares(usage: list[list[float]], groups: dict[str, list[int]]) -> dict[str, float]:
    """Mean over layers of the share of picks that land in each named group of experts
    (`groups`: name -> [first, last] expert, inclusive)."""
    per_layer = torch.tensor(usage)
    return {name: float(per_layer[:, lo:hi + 1].sum(-1).mean()) for name, (lo, hi) in groups.items()}
