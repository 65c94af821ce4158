"""The backend protocol and what a backend reports about its model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

from ttscale.backends.sampling import Sampling
from ttscale.branch import Branch
from ttscale.routing.config import RerouteConfig


@dataclass(frozen=True)
class ModelInfo:
    family: str
    n_layers: int
    moe_layers: tuple[int, ...]      # decoder-layer indices with a router
    n_experts: int
    top_k: int
    total_params: int
    active_params: int               # parameters one token touches (top-k of the routed experts)
    routed_expert_params: int        # all routed experts of all MoE layers
    embedding_params: int            # untied input embeddings: a lookup, no FLOPs
    vocab_size: int
    attention_flops_per_pair: int    # QK^T and AV FLOPs of one (query, key) pair, all layers
    context_length: int | None = None  # most tokens (prompt + generated) a branch may hold; None: no limit
    layer_params: int = 0            # mean active parameters of one decoder layer (adaptation skips the lowest)


@dataclass
class ExtendRequest:
    """One branch's part of an `extend`: its sampling, how far this call may grow it, what ends it.

    Every field is per branch, so a backend can grow the branches of many problems, at different
    phases of their strategies, in one batch."""
    branch: Branch
    sampling: Sampling
    max_new_tokens: int | None = None     # more tokens this call may add (None: up to sampling.max_new_tokens)
    stop: tuple[str, ...] = ()            # stop strings: they finish the branch
    step_end: str | None = None           # a delimiter that pauses the branch (a beam step)
    resumable: bool = False               # it comes back for more after this call's budget (a rerouting chunk):
                                          # a backend may keep its cache for then, valid while its deltas stay

    def budget(self) -> int:
        """Tokens this call may add: its own cap, within the branch's total cap."""
        left = self.sampling.max_new_tokens - len(self.branch.generated)
        return left if self.max_new_tokens is None else min(left, self.max_new_tokens)


@dataclass
class Scored:
    """A branch's tokens from some position on: each one's log-prob, and the `k` most likely tokens
    (id, log-prob) at each of those positions, most likely first (`top` is empty when k is 0)."""
    logprobs: list[float]
    top: list[list[tuple[int, float]]]


class PromptTooLong(ValueError):
    """A prompt that does not fit the model's context: the problem cannot be run."""


def runnable(requests: Sequence[ExtendRequest], context_length: int | None) -> list[tuple[ExtendRequest, int]]:
    """The requests whose branches can grow, each with the tokens this call may add.

    Both backends apply the same rule at the model's context length: a branch holds at most
    `context_length - 1` tokens (an input must be shorter than the context to be run, or scored, at
    all), so its budget is capped there and a branch that has filled the context finishes with
    "length"; a prompt that is not shorter than the context is an error. Finished branches are skipped."""
    rows = []
    for r in requests:
        b = r.branch
        if b.finished:
            continue
        if context_length is not None and b.prompt_len >= context_length:
            where = f"problem {b.meta['problem']}: " if b.meta.get("problem") is not None else ""
            raise PromptTooLong(f"{where}the prompt ({b.prompt_len} tokens) is not shorter than the model's "
                                f"context length ({context_length} tokens)")
        budget = r.budget() if context_length is None else min(r.budget(), context_length - 1 - len(b.tokens))
        if budget <= 0:
            b.finished, b.finish_reason = True, "length"
            continue
        rows.append((r, budget))
    return rows


def at_length_limit(b: Branch, sampling: Sampling, context_length: int | None) -> bool:
    """Whether the branch has reached its length cap or filled the model's context (see `runnable`)."""
    return len(b.generated) >= sampling.max_new_tokens or (context_length is not None
                                                           and len(b.tokens) >= context_length - 1)


def requests_for(branches: Sequence[Branch], sampling: Sampling | Sequence[Sampling], max_new_tokens: int | None = None,
             stop: Sequence[str] = (), step_end: str | None = None, resumable: bool = False) -> list[ExtendRequest]:
    """The same call for every branch (one sampling, or one per branch)."""
    params = [sampling] * len(branches) if isinstance(sampling, Sampling) else list(sampling)
    return [ExtendRequest(b, p, max_new_tokens, tuple(stop), step_end, resumable) for b, p in zip(branches, params)]


def check_local_dir(model: str, what: str = "model") -> None:
    """A path-like name that is not a directory is a clear error, not a hub lookup."""
    if model.startswith((".", "/", "~")) and not Path(model).expanduser().is_dir():
        raise ValueError(f"{what} directory not found: {model}")


def check_context(prompt_tokens: int, context_length: int | None, max_new_tokens: int | None = None) -> None:
    """A prompt (and, when given, its longest generation) must fit the model's context."""
    if context_length is None:
        return
    if prompt_tokens >= context_length:
        raise PromptTooLong(f"prompt of {prompt_tokens} tokens is longer than the model's context "
                         f"({context_length} tokens, generation included)")
    if max_new_tokens is not None and prompt_tokens + max_new_tokens > context_length:
        raise ValueError(f"prompt of {prompt_tokens} tokens plus max_tokens {max_new_tokens} is longer than "
                         f"the model's context ({context_length} tokens)")


class ChatBranches:
    """Prompts to branches and generated tokens to text, through the backend's `tokenizer`; `extend`
    for one call shape over all branches."""
    tokenizer: Any

    def encode(self, messages: list[dict[str, str]]) -> list[int]:
        if self.tokenizer.chat_template:
            text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            return self.tokenizer(text, add_special_tokens=False).input_ids
        return self.tokenizer("\n\n".join(m["content"] for m in messages)).input_ids

    def new_branch(self, messages: list[dict[str, str]], seed: int = 0) -> Branch:
        tokens = self.encode(messages)
        check_context(len(tokens), self.info.context_length)
        return Branch(tokens=tokens, prompt_len=len(tokens), seed=seed)

    def set_text(self, b: Branch, stop: Sequence[str]) -> None:
        """The generated text, cut before the first stop string."""
        b.text = self.tokenizer.decode(b.generated, skip_special_tokens=True)
        cuts = [b.text.find(s) for s in stop if s in b.text]
        if cuts:
            b.text = b.text[:min(cuts)]

    def extend(self, branches: Sequence[Branch], sampling: Sampling | Sequence[Sampling],
               max_new_tokens: int | None = None, stop: Sequence[str] = (), keep_cache: bool = False,
               step_end: str | None = None) -> list[Branch]:
        self.extend_requests(requests_for(branches, sampling, max_new_tokens, stop, step_end), keep_cache)
        return list(branches)


class Backend(Protocol):
    info: ModelInfo

    def new_branch(self, messages: list[dict[str, str]], seed: int = 0) -> Branch:
        """A fresh branch whose context is the prompt (chat template applied when there is one)."""

    def extend_requests(self, requests: Sequence[ExtendRequest], keep_cache: bool = False) -> None:
        """Grow each unfinished branch, under its own deltas, until EOS, one of its stop strings or its
        length cap finishes it, its request's budget is spent, or (with `step_end`) a step is complete.
        With `keep_cache` the backend may continue on the KV cache of the previous call (`kv=keep`)."""

    def extend(self, branches: Sequence[Branch], sampling: Sampling | Sequence[Sampling],
               max_new_tokens: int | None = None, stop: Sequence[str] = (), keep_cache: bool = False,
               step_end: str | None = None) -> list[Branch]:
        """`extend_requests` with the same request for every branch."""

    def score(self, branches: Sequence[Branch], start: int | None = None) -> list[list[float]]:
        """Log-probs of each branch's existing tokens from `start` (default: its prompt length) on."""

    def score_top(self, branches: Sequence[Branch], k: int, start: int | None = None) -> list[Scored]:
        """`score`, with the `k` most likely tokens at each scored position."""

    def adapt(self, branches: Sequence[Branch], cfg: RerouteConfig) -> list[Branch]:
        """One adaptation phase (cfg.steps gradient steps) on each branch's deltas, over its context."""
