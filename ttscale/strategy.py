"""A strategy: a generator (plain or rerouted) and a search, built from a spec or composed in code.

    strategy = Strategy.from_spec("reroute+sc", n=8, overrides=["sc.temperature=0.6"])
    outcome = strategy.solve(problem, task, backend, seed=0)
    outcomes = strategy.solve_all(problems, task, backend)     # many problems in flight, shared batches

or, composing in code with a scorer of your own:

    strategy = Strategy(RerouteGenerator(RerouteConfig(lr=0.05)), BestOfN(BestOfN.Params(), 8, Sampling(), scorer=mine))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from ttscale.backends.base import Backend
from ttscale.generators import PlainGenerator, RerouteGenerator
from ttscale.inflight import InFlight, Solving, drive
from ttscale.search import SEARCHES, Context, Outcome
from ttscale.spec import check_n, parse_spec, resolve_settings
from ttscale.tasks.base import Problem, Task


@dataclass
class Strategy:
    generator: PlainGenerator
    search: Any
    spec: str = ""
    settings: dict[str, Any] = field(default_factory=dict)    # the sections this strategy uses

    @classmethod
    def from_spec(cls, text: str, n: int = 1, overrides: Iterable[str] = (), presets: Path | None = None) -> Strategy:
        if n < 1:
            raise ValueError(f"--n must be at least 1, got {n}")
        spec, named = parse_spec(text, presets)
        check_n(spec, n)
        settings = resolve_settings(spec, overrides, named, presets)
        generator = RerouteGenerator(settings["reroute"]) if spec.generator == "reroute" else PlainGenerator()
        search = SEARCHES[spec.search](settings[spec.search], n, settings["sample"])
        used = ("sample", "task", *(("reroute",) if spec.generator == "reroute" else ()), spec.search)
        return cls(generator, search, text, {name: settings[name] for name in used})

    def concurrency(self, batch_size: int, requested: int | None = None) -> int:
        """Problems in flight: `requested`, or (None) as many as fill `batch_size` rows."""
        if isinstance(self.generator, RerouteGenerator) and self.generator.cfg.kv == "keep":
            if requested not in (None, 1):     # a kept cache belongs to one batch of one problem's branches
                raise ValueError(f"--concurrency {requested} needs reroute.kv=recompute; kv=keep runs one problem "
                                 "at a time (--concurrency 1)")
            return 1
        return requested or max(1, batch_size // self.search.rows)

    def solving(self, problem: Problem, task: Task, backend: Backend, seed: int = 0,
                stop: Sequence[str] | None = None) -> Solving:
        """The coroutine that solves one problem (driven by `ttscale.inflight.InFlight`). The strategy's
        `task.stop` and `task.extract` apply to whatever task it is given."""
        return self.search.solve(Context(problem, task, backend, self.generator, seed, stop, self.settings.get("task")))

    def solve(self, problem: Problem, task: Task, backend: Backend, seed: int = 0,
              stop: Sequence[str] | None = None) -> Outcome:
        """Solve one problem (stop strings: the task's, the problem's and `task.stop`, unless given)."""
        return drive(backend, self.solving(problem, task, backend, seed, stop))

    def solve_all(self, problems: Iterable[Problem], task: Task, backend: Backend, seed: int = 0,
                  concurrency: int | None = None) -> list[Outcome]:
        """Solve the problems, many at once (`concurrency`, default: enough to fill the backend's batch);
        the outcomes are in problem order and do not depend on the concurrency."""
        problems = list(problems)
        k = self.concurrency(getattr(backend, "batch_size", 32), concurrency)
        done: dict[int, Outcome] = {}
        InFlight(backend, k).run(((i, self.solving(p, task, backend, seed)) for i, p in enumerate(problems)),
                                 done.__setitem__)
        return [done[i] for i in range(len(problems))]
