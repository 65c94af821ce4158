"""`ttscale run --workers N`: a run's problems spread over N Ray actors, each holding its own backend (one
GPU each, or one CPU thread each) and its own in-flight driver (`--concurrency` applies per worker).

This process stays the run's driver: `runs.run` owns the run directory (records appended as they
arrive, the summary, resume, the progress bar) and hands the problems to `Workers.solve`, which keeps
each worker busy with up to its concurrency plus a few queued problems and reports every record as
it arrives. A problem is held by one worker at a time, so none is recorded twice. A worker whose
process dies loses no problem: its unfinished ones go back to the front of the queue for any worker,
and Ray restarts it (reloading its backend) up to `RESTARTS` times. A problem whose own solving
raises gets the record of its error (`runs.attempt`), as on one device.

Ray is imported only here, and only when workers are asked for: `pip install "ttscale[ray]"`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import threading
import time
import uuid
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable

from ttscale.tasks.base import Problem, Task

log = logging.getLogger(__name__)

RESTARTS = 2          # times Ray restarts a worker whose process died, before the run goes on without it
PROBE_SECONDS = 1.0   # how often a restarting worker is asked whether it is back
WAIT_SECONDS = 60.0   # workers not started by then are waiting for resources: say so


class WorkersFailed(RuntimeError):
    """No worker is left to solve the problems still queued."""


def _ray():
    try:
        import ray
    except ImportError:
        raise ValueError("--workers and --ray need Ray: pip install 'ttscale[ray]'") from None
    return ray


class Worker:
    """One Ray actor: a backend, and an in-flight driver over the problems that `solve` calls bring.

    `solve` queues its problem and waits for its record; a thread of the actor's own runs the queue
    through `InFlight`, so the problems of concurrent calls share batches as on one device."""

    def __init__(self, backend: str, model: str, options: dict[str, Any]):
        self.error: Exception | None = None
        self.backend_name = backend
        try:
            if options.get("device") == "cpu":
                import torch
                torch.set_num_threads(1)
            from ttscale.backends import load_backend
            self.backend = load_backend(backend, model, **options)
        except Exception as e:        # reported by `ready`, as the error it is (a bad --model is bad input)
            self.error = e
        self.jobs: dict[str, tuple[Any, Task]] = {}
        self.queue: deque[tuple[str, Any, Task, Problem, Future]] = deque()
        self.lock = threading.Condition()
        threading.Thread(target=self._loop, name="ttscale-worker", daemon=True).start()

    async def ready(self) -> dict[str, Any]:
        if self.error is not None:
            raise self.error
        import ray
        from ttscale.runs import describe
        return {"pid": os.getpid(), "node": ray.util.get_node_ip_address(),
                "batch_size": getattr(self.backend, "batch_size", 32), "backend_settings": describe(self.backend, self.backend_name)}

    async def solve(self, key: str, payload: list, problem: Problem) -> dict[str, Any]:
        """The record of one problem of the run `key`; `payload` holds the reference to its (config, task)."""
        if key not in self.jobs:
            self.jobs = {key: await payload[0]}       # one run at a time: the previous one's config goes
        cfg, task = self.jobs[key]
        future: Future = Future()
        with self.lock:
            self.queue.append((key, cfg, task, problem, future))
            self.lock.notify()
        return await asyncio.wrap_future(future)

    def _loop(self) -> None:
        from ttscale.inflight import InFlight
        from ttscale.runs import attempt

        while True:
            with self.lock:
                while not self.queue:
                    self.lock.wait()
                key, cfg, task, _, _ = self.queue[0]
            futures: dict[int, Future] = {}

            def jobs():
                """The queued problems of run `key`; None while there are none (`InFlight` then ends once
                nothing is in flight, and the loop waits for the next call)."""
                for name in itertools.count():
                    while True:
                        with self.lock:
                            item = self.queue.popleft() if self.queue and self.queue[0][0] == key else None
                        if item is not None:
                            break
                        yield None
                    futures[name] = item[4]
                    yield name, attempt(item[3], task, self.backend, cfg)

            flight = InFlight(self.backend, cfg.plan.concurrency(getattr(self.backend, "batch_size", 32),
                                                                 cfg.concurrency))
            try:
                flight.run(jobs(), lambda name, record: futures.pop(name).set_result(record))
            except Exception as e:       # a backend failure: the problems in flight fail with it, and the run stops
                for future in futures.values():
                    future.set_exception(e)


@dataclass(eq=False)
class _Slot:
    """The driver's view of one worker."""
    index: int
    actor: Any
    info: dict[str, Any] = field(default_factory=dict)     # pid, node, batch_size (of its latest start)
    state: str = "ready"      # ready | restarting (a call failed: Ray restarts it) | dead (no restart left)
    probe_at: float = 0.0     # restarting: when to ask it again whether it is back
    deaths: int = 0
    depth: int = 1            # problems handed to it at once: its concurrency plus a few queued
    load: int = 0             # problems it holds now
    solved: int = 0


class Workers:
    """N Ray actors for runs (`runs.execute(..., workers=...)`); a context manager that disconnects on exit.

    Connects at once: to the cluster at `address` (`HOST:PORT` of `ray start --head`, `auto`, or
    `ray://HOST:PORT`), to the Ray instance this process already initialised, or else to a new local
    instance that stops with it; fails with a one-line ValueError if it cannot, or if the cluster has
    fewer than N CPUs (or, on cuda, GPUs). `device`: cuda when the cluster has GPUs, unless given.
    The actors start (each loading its backend) at `start`, which a run calls after checking its
    output directory."""

    def __init__(self, n: int, address: str | None = None, device: str | None = None):
        if n < 1:
            raise ValueError(f"--workers must be at least 1, got {n}")
        ray = _ray()
        self.n, self.slots, self.spec = n, [], None
        self.owns = not ray.is_initialized()
        if not self.owns and address:
            raise ValueError(f"--ray {address}: this process is connected to Ray already; leave the address out")
        if self.owns:
            _check_reachable(address)
            local = {} if address else {"include_dashboard": False}
            try:
                ray.init(address=address or "local", logging_level=logging.ERROR, log_to_driver=False, **local)
            except ConnectionError as e:
                hint = ("; a cluster with token authentication (Ray's default) also needs RAY_AUTH_MODE=token and its "
                        "token here" if address and "RAY_AUTH_MODE" not in os.environ else "")
                raise ValueError(f"--ray {address}: {e}{hint}") from None
        try:
            resources = ray.cluster_resources()
            gpus, cpus = resources.get("GPU", 0), resources.get("CPU", 0)
            self.device = device or ("cuda" if gpus else "cpu")
            where = f"the Ray cluster at {address}" if address else "this machine's Ray instance"
            if self.device == "cuda" and gpus < n:
                raise ValueError(f"--workers {n} on cuda needs {n} GPUs; {where} has {gpus:g}")
            if cpus < n:
                raise ValueError(f"--workers {n} needs {n} CPUs (one per worker); {where} has {cpus:g}")
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    def describe(self) -> str:
        threads = "one GPU each" if self.device == "cuda" else "one CPU thread each"
        return f"{self.n} Ray worker{'s' * (self.n > 1)} on {self.device}, {threads}"

    def backend_settings(self) -> dict[str, Any] | None:
        """Where and how the first worker runs its model (every worker loads the same backend)."""
        return self.slots[0].info.get("backend_settings") if self.slots and self.slots[0].info else None

    def start(self, backend: str, model: str, **options: Any) -> None:
        """Start the actors, each loading `backend` over `model` (no-op if they already hold it)."""
        ray = _ray()
        options = {k: v for k, v in options.items() if v is not None} | {"device": self.device}
        spec = (backend, model, sorted(options.items()))
        if self.spec == spec and all(s.state != "dead" for s in self.slots):
            return
        self.stop()
        actor = ray.remote(Worker).options(num_cpus=1, num_gpus=int(self.device == "cuda"), max_restarts=RESTARTS,
                                           max_task_retries=0)
        self.slots = [_Slot(i, actor.remote(backend, model, options)) for i in range(self.n)]
        calls = [s.actor.ready.remote() for s in self.slots]
        try:
            if len(ray.wait(calls, num_returns=len(calls), timeout=WAIT_SECONDS)[0]) < len(calls):
                free = ray.available_resources()
                log.warning(f"waiting for the workers to start: {self.describe()} asked, the cluster has "
                            f"{free.get('CPU', 0):g} CPUs and {free.get('GPU', 0):g} GPUs free now")
            for slot, info in zip(self.slots, ray.get(calls)):
                slot.info = info
        except ray.exceptions.RayTaskError as e:
            self.stop()
            raise e.cause from None
        except ray.exceptions.RayActorError as e:
            self.stop()
            raise WorkersFailed(f"a worker died while loading its backend: {str(e).splitlines()[0]}") from None
        self.spec = spec

    def solve(self, problems: list[Problem], task: Task, cfg: Any,
              finished: Callable[[dict[str, Any], int], None]) -> None:
        """Solve the problems on the workers, calling `finished(record, problems_in_flight)` as each
        record arrives (in any order)."""
        ray = _ray()
        key = uuid.uuid4().hex
        payload = [ray.put((cfg, task))]
        queue = deque(problems)
        calls: dict[Any, tuple[_Slot, Problem | None]] = {}       # call -> (worker, its problem; None: a probe)
        recorded: set[str] = set()
        for slot in self.slots:
            slot.depth, slot.load = _depth(cfg.plan.concurrency(slot.info["batch_size"], cfg.concurrency)), 0
            if slot.state == "restarting":       # still restarting when the last run ended: ask it at once
                slot.probe_at = time.monotonic()
        try:
            while queue or any(slot.load for slot in self.slots):
                while queue and (room := [s for s in self.slots if s.state == "ready" and s.load < s.depth]):
                    slot = min(room, key=lambda s: s.load / s.depth)      # deal problems out evenly
                    problem = queue.popleft()
                    calls[slot.actor.solve.remote(key, payload, problem)] = slot, problem
                    slot.load += 1
                for slot in self.slots:
                    if slot.state == "restarting" and slot.probe_at and time.monotonic() >= slot.probe_at:
                        calls[slot.actor.ready.remote()], slot.probe_at = (slot, None), 0.0
                if all(s.state == "dead" for s in self.slots):
                    raise WorkersFailed(f"every worker died ({self.n} workers, {RESTARTS} restarts each); "
                                        f"{len(queue)} problems left: re-run the same command to resume")
                done = ray.wait(list(calls), num_returns=1, timeout=PROBE_SECONDS)[0] if calls else []
                if not done:
                    time.sleep(0 if calls else PROBE_SECONDS)
                    continue
                slot, problem = calls.pop(done[0])
                slot.load -= problem is not None
                try:
                    result = ray.get(done[0])
                except ray.exceptions.RayActorError as e:
                    if problem is not None:
                        queue.appendleft(problem)
                    self._lost(slot, e, ray)
                    continue
                except ray.exceptions.RayTaskError as e:
                    raise e.cause from None
                if problem is None:                       # a restarted worker is back, its backend loaded
                    slot.info, slot.state = result, "ready"
                    continue
                if result["id"] in recorded:
                    raise RuntimeError(f"problem {result['id']} came back twice from the workers")
                recorded.add(result["id"])
                slot.solved += 1
                finished(result, sum(s.load for s in self.slots))
        except BaseException:
            self.stop()           # calls still queued on the workers must not outlive the run
            raise

    def _lost(self, slot: _Slot, error: Exception, ray: Any) -> None:
        """A call failed because the worker's process is gone: Ray restarts it (its calls fail with
        ActorUnavailableError meanwhile, and it is probed until it is back) or, restarts spent, it is dead."""
        where = f"pid {slot.info.get('pid')} on {slot.info.get('node')}"
        if isinstance(error, ray.exceptions.ActorDiedError):
            if slot.state != "dead":
                slot.state = "dead"
                log.warning(f"worker {slot.index} ({where}) died and is not restarted; the run goes on without it")
            return
        if slot.state == "ready":              # the first failed call of this death
            slot.deaths += 1
            slot.state = "restarting"
            log.warning(f"worker {slot.index} ({where}) died; its {slot.load + 1} unfinished problems go back to "
                        f"the queue while Ray restarts it")
        slot.probe_at = time.monotonic() + PROBE_SECONDS

    def stop(self) -> None:
        """Kill the actors (a later `start` makes new ones)."""
        if self.slots:
            ray = _ray()
            for slot in self.slots:
                ray.kill(slot.actor, no_restart=True)
        self.slots, self.spec = [], None

    def close(self) -> None:
        """Kill the actors and disconnect (stopping the local Ray instance this started)."""
        self.stop()
        if self.owns:
            _ray().shutdown()
            self.owns = False


def _depth(concurrency: int) -> int:
    """Problems a worker holds at once: its concurrency, and a few queued so that a finished problem is
    replaced at once, without waiting for the driver."""
    return concurrency + max(2, concurrency // 4)


def _check_reachable(address: str | None) -> None:
    """Fail fast on an address nothing answers at (Ray itself retries for minutes)."""
    if not address:
        return
    target = address
    if address == "auto":
        from ray._private.services import canonicalize_bootstrap_address_or_die
        try:
            target = canonicalize_bootstrap_address_or_die("auto")
        except ConnectionError as e:
            raise ValueError(f"--ray auto: {e}") from None
    host, _, port = target.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--ray {address!r}: expected HOST:PORT (of `ray start --head`), ray://HOST:PORT or auto")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as e:
        raise ValueError(f"--ray {address}: nothing answers at {host}:{port} ({e.strerror or e})") from None
