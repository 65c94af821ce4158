"""Many problems in flight: each problem's search runs as a coroutine, and the backend work they wait
on is merged into shared batches.

A search is written as the algorithm for one problem (`async def solve(ctx)`); every backend
operation it needs (`extend`, `score`, `adapt`) is an awaitable `Op` that suspends it. `InFlight`
drives up to K such coroutines: once every one of them waits on an op, it runs the ops of one kind
(and compatible settings) as one backend call over all their rows, then resumes them in order. A
coroutine that returns frees its slot and the next problem starts at once. Nothing here is
asynchronous in the operating-system sense: it is a deterministic trampoline, so the order of work,
and with per-row seeds and deltas every branch's result, does not depend on K.
"""

from __future__ import annotations

from collections.abc import Coroutine, Generator, Hashable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Sequence

from ttscale.backends.base import Backend, ExtendRequest
from ttscale.branch import Branch
from ttscale.routing.reroute import RerouteConfig


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
class Score(Op):
    branches: list[Branch]
    start: int | None = None

    def key(self) -> Hashable:
        return Score, self.start

    @staticmethod
    def run(backend: Backend, ops: Sequence[Score]) -> list[list[list[float]]]:
        scores = backend.score([b for op in ops for b in op.branches], ops[0].start)
        return list(_split(scores, [len(op.branches) for op in ops]))


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


def _split(items: list, sizes: list[int]) -> Iterator[list]:
    start = 0
    for size in sizes:
        yield items[start:start + size]
        start += size


Solving = Coroutine[Op, Any, Any]


class InFlight:
    """Drives up to `concurrency` solving coroutines on one backend, merging their ops into batches."""

    def __init__(self, backend: Backend, concurrency: int = 1):
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.backend, self.concurrency = backend, concurrency
        self.waiting: dict[Hashable, tuple[Solving, Op]] = {}     # admission order

    def run(self, jobs: Iterable[tuple[Hashable, Solving]]) -> Iterator[tuple[Hashable, Any]]:
        """Yield `(key, result)` of each job as it finishes (in any order); the next job starts at once."""
        jobs = iter(jobs)
        self.waiting = {}
        finished: list[tuple[Hashable, Any]] = []
        try:
            while True:
                while len(self.waiting) < self.concurrency and (job := next(jobs, None)) is not None:
                    self._advance(*job, None, finished)
                yield from finished
                finished.clear()
                if not self.waiting:
                    return
                self._round(finished)
        finally:
            self.close()

    def _round(self, finished: list[tuple[Hashable, Any]]) -> None:
        """Run every waiting op, grouped by key, then resume the coroutines in admission order."""
        groups: dict[Hashable, list[Hashable]] = {}
        for name, (_, op) in self.waiting.items():
            groups.setdefault(op.key(), []).append(name)
        results: dict[Hashable, Any] = {}
        for names in groups.values():
            ops = [self.waiting[name][1] for name in names]
            results.update(zip(names, type(ops[0]).run(self.backend, ops)))
        for name in list(self.waiting):
            coroutine, _ = self.waiting.pop(name)
            self._advance(name, coroutine, results[name], finished)

    def _advance(self, name: Hashable, coroutine: Solving, value: Any, finished: list) -> None:
        try:
            self.waiting[name] = coroutine, coroutine.send(value)
        except StopIteration as done:
            finished.append((name, done.value))
        except BaseException:
            coroutine.close()
            raise

    def close(self) -> None:
        """Abandon the coroutines in flight."""
        for coroutine, _ in self.waiting.values():
            coroutine.close()
        self.waiting = {}

    @property
    def in_flight(self) -> int:
        return len(self.waiting)


def drive(backend: Backend, solving: Solving) -> Any:
    """Run one coroutine to its result on `backend` (each op as its own call)."""
    return next(InFlight(backend).run([(0, solving)]))[1]
