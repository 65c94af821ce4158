"""Many problems in flight: each problem's search runs as a coroutine, and the backend work they wait
on is merged into shared batches.

A search is written as the algorithm for one problem (`async def solve(ctx)`); every backend
operation it needs (`extend`, `adapt`) is an awaitable `Op` that suspends it. `InFlight`
drives up to K such coroutines: once every one of them waits on an op, it runs the ops of one kind
(and compatible settings) as one backend call over all their rows, then resumes them in order. A
coroutine that returns frees its slot and the next problem starts at once. Nothing here is
asynchronous in the operating-system sense: it is a deterministic trampoline, so the order of work,
and with per-row seeds and deltas every branch's result, does not depend on K.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Generator, Hashable, Iterable
from dataclasses import dataclass
from typing import Any, Sequence

from ttscale.backends.base import Backend, ExtendRequest
from ttscale.branch import Branch
from ttscale.routing.config import RerouteConfig


class Op:
    """A backend operation a solving coroutine waits on; `await op` returns its result."""

    def key(self) -> Hashable:
        """Ops with equal keys run as one backend call."""
        raise NotImplementedError

    @staticmethod
    def run(backend: Backend, ops: Sequence[Op]) -> list[Any]:
        """Run ops of one key as one call; one result per op."""
        raise NotImplementedError

    def __await__(self) -> Generator[Op, Any, Any]:
        return (yield self)


@dataclass(eq=False)
class Extend(Op):
    requests: list[ExtendRequest]
    keep_cache: bool = False

    def key(self) -> Hashable:
        return Extend, self.keep_cache

    @staticmethod
    def run(backend: Backend, ops: Sequence[Extend]) -> list[None]:
        backend.extend_requests([r for op in ops for r in op.requests], keep_cache=ops[0].keep_cache)
        return [None] * len(ops)


@dataclass(eq=False)
class Adapt(Op):
    branches: list[Branch]
    cfg: RerouteConfig

    def key(self) -> Hashable:
        return Adapt, tuple(sorted(self.cfg.__dict__.items()))

    @staticmethod
    def run(backend: Backend, ops: Sequence[Adapt]) -> list[None]:
        backend.adapt([b for op in ops for b in op.branches], ops[0].cfg)
        return [None] * len(ops)


Solving = Coroutine[Op, Any, Any]


class InFlight:
    """Drives up to `concurrency` solving coroutines on one backend, merging their ops into batches.

    A round runs every waiting op, grouped by key, and resumes the coroutines in admission order.
    Plain extends go further where the backend allows (`refill`): a coroutine is resumed as soon as
    its own rows are done, and if it then extends again, or a new problem takes its slot and
    extends, those rows join the running batch, unless some problem waits on another kind of op."""

    def __init__(self, backend: Backend, concurrency: int = 1):
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.backend, self.concurrency = backend, concurrency
        self.waiting: dict[Hashable, tuple[Solving, Op]] = {}     # admission order

    def run(self, jobs: Iterable[tuple[Hashable, Solving]], done: Callable[[Hashable, Any], None]) -> None:
        """Solve every job, calling `done(key, result)` as each finishes (in any order); the next job
        starts at once. `next(jobs, None) is None` means "no job now": a server's iterator over a queue
        returns None when it is empty, and jobs queued later are admitted at the next round (or join a
        running extend batch); `run` returns once nothing is in flight."""
        self.jobs, self.done, self.waiting = iter(jobs), done, {}
        try:
            self._admit()
            while self.waiting:
                self._round()
        finally:
            self.close()

    def _admit(self) -> None:
        while len(self.waiting) < self.concurrency and (job := next(self.jobs, None)) is not None:
            self._advance(*job, None)

    def _advance(self, name: Hashable, coroutine: Solving, value: Any) -> None:
        try:
            self.waiting[name] = coroutine, coroutine.send(value)
        except StopIteration as finished:
            self.done(name, finished.value)
            self._admit()
        except BaseException:
            coroutine.close()
            raise

    def _resume(self, name: Hashable, value: Any) -> None:
        coroutine, _ = self.waiting.pop(name)
        self._advance(name, coroutine, value)

    def _round(self) -> None:
        self._admit()          # jobs that arrived since (a server's queue): none when the slots are full
        groups: dict[Hashable, list[Hashable]] = {}
        for name, (_, op) in self.waiting.items():
            groups.setdefault(op.key(), []).append(name)
        results: list[tuple[Hashable, Any]] = []
        for names in groups.values():
            ops = [self.waiting[name][1] for name in names]
            if self._joinable(ops[0]):
                self._extend_joining(names)
            else:
                results += zip(names, type(ops[0]).run(self.backend, ops))
        for name, result in results:
            self._resume(name, result)

    def _joinable(self, op: Op) -> bool:
        return isinstance(op, Extend) and not op.keep_cache and getattr(self.backend, "joins", False)

    def _extend_joining(self, names: list[Hashable]) -> None:
        """One extend call whose batch stays full: coroutines resume as their rows are done, and their
        next extends (or new problems' first ones) join it."""
        owner: dict[int, Hashable] = {}
        left: dict[Hashable, int] = {}

        def take(name: Hashable) -> list[ExtendRequest]:
            requests = self.waiting[name][1].requests
            left[name] = len(requests)
            owner.update((id(r), name) for r in requests)
            return requests

        def refill(done: list[ExtendRequest]) -> list[ExtendRequest]:
            for r in done:
                name = owner.pop(id(r))
                left[name] -= 1
                if not left[name]:
                    del left[name]
                    self._resume(name, None)
            self._admit()      # jobs that arrived while the batch ran may join it
            if not all(self._joinable(op) for _, op in self.waiting.values()):
                return []          # someone waits on another kind of op: let this batch drain
            return [r for name in list(self.waiting) if name not in left for r in take(name)]

        requests = [r for name in names for r in take(name)]
        if requests:
            self.backend.extend_requests(requests, refill=refill)
        for name in [n for n in names if n in left and not left[n]]:
            self._resume(name, None)

    def close(self) -> None:
        """Abandon the coroutines in flight."""
        for coroutine, _ in self.waiting.values():
            coroutine.close()
        self.waiting = {}

    @property
    def in_flight(self) -> int:
        return len(self.waiting)


def drive(backend: Backend, solving: Solving) -> Any:
    """Run one coroutine to its result on `backend`."""
    results: list[Any] = []
    InFlight(backend).run([(0, solving)], lambda _, result: results.append(result))
    return results[0]
