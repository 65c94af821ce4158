"""The scheduler: one thread owns the backend and solves every request through one `InFlight`, so the
branches of concurrent requests share batches (the same in-flight batching as `ttscale run`).

Requests wait in a queue. While anything is in flight, `InFlight.run` pulls queued requests at each
round (and into a running extend batch) through a jobs iterator that returns None when the queue is
empty; once nothing is in flight, the thread sleeps until the next request. Each request's coroutine
is wrapped so that its own exception becomes its result (a bad request fails only itself) and so that
a cancelled request (its client went away) is dropped: its rows in a running batch finish at their
next token, and it is closed before its next operation.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections import deque
from typing import Any, Callable, Coroutine

from ttscale.backends.base import Backend
from ttscale.inflight import Extend, InFlight, Op


class QueueFull(Exception):
    """More requests are queued or in flight than the server takes."""


class Cancelled(Exception):
    """The request was cancelled (its client disconnected)."""


class Ticket:
    """One request: its coroutine (made when it starts), the asyncio future its handler awaits."""

    def __init__(self, key: int, make: Callable[[], Coroutine], future: asyncio.Future, loop: asyncio.AbstractEventLoop):
        self.key, self.make, self.future, self.loop = key, make, future, loop
        self.cancelled = False
        self.op: Op | None = None            # the operation it waits on, while in flight

    def cancel(self) -> None:
        """Drop the request (any thread): rows of its running extend finish at their next token; the
        scheduler closes its coroutine before its next operation."""
        self.cancelled = True
        op = self.op
        if isinstance(op, Extend):
            for request in op.requests:
                request.branch.finished, request.branch.finish_reason = True, "cancelled"

    def resolve(self, result: Any) -> None:
        def set_result() -> None:
            if not self.future.done():
                self.future.set_result(result)
        try:
            self.loop.call_soon_threadsafe(set_result)
        except RuntimeError:                 # the event loop is closed: nobody waits
            pass


class Scheduler:
    def __init__(self, backend: Backend, concurrency: int, max_queue: int):
        self.backend, self.concurrency, self.max_queue = backend, concurrency, max_queue
        self.queue: deque[Ticket] = deque()
        self.running: dict[int, Ticket] = {}
        self.pending = 0                     # queued or in flight
        self.lock = threading.Condition()
        self.keys = itertools.count()
        self.stopping = False
        self.thread = threading.Thread(target=self._loop, name="ttscale-scheduler", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Finish what is queued and in flight, then end the thread."""
        with self.lock:
            self.stopping = True
            self.lock.notify()
        self.thread.join(timeout)

    def submit(self, make: Callable[[], Coroutine]) -> Ticket:
        """Queue a request (from the event loop); `make()` builds its coroutine in the scheduler thread.
        Its result (or the exception it raised) arrives on `ticket.future`."""
        loop = asyncio.get_running_loop()
        with self.lock:
            if self.pending >= self.max_queue:
                raise QueueFull(f"{self.pending} requests are queued or in flight, this server's limit "
                                f"(--max-queue {self.max_queue}); retry later")
            if self.stopping:
                raise QueueFull("the server is shutting down")
            ticket = Ticket(next(self.keys), make, loop.create_future(), loop)
            self.pending += 1
            self.queue.append(ticket)
            self.lock.notify()
        return ticket

    @property
    def in_flight(self) -> int:
        return len(self.running)

    # --- the scheduler thread -----------------------------------------------------------------

    def _loop(self) -> None:
        flight = InFlight(self.backend, self.concurrency)
        while True:
            with self.lock:
                while not self.queue and not self.stopping:
                    self.lock.wait()
                if not self.queue:
                    return
            try:
                flight.run(_Jobs(self), self._finish)
            except Exception as e:           # a backend failure: every request in flight fails with it
                for key in list(self.running):
                    self._finish(key, RuntimeError(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"))

    def _next(self) -> tuple[int, Coroutine] | None:
        while True:
            with self.lock:
                if not self.queue:
                    return None
                ticket = self.queue.popleft()
            if ticket.cancelled:
                self._done(ticket, Cancelled())
                continue
            self.running[ticket.key] = ticket
            return ticket.key, self._guarded(ticket)

    async def _guarded(self, ticket: Ticket) -> Any:
        """The request's coroutine, forwarding its operations; its exception is its result."""
        inner = None
        try:
            inner = ticket.make()
            value = None
            while True:
                if ticket.cancelled:
                    raise Cancelled()
                try:
                    op = inner.send(value)
                except StopIteration as finished:
                    return finished.value
                ticket.op = op
                value = await op
                ticket.op = None
        except Exception as e:
            return e
        finally:
            if inner is not None:
                inner.close()

    def _finish(self, key: int, result: Any) -> None:
        self._done(self.running.pop(key), result)

    def _done(self, ticket: Ticket, result: Any) -> None:
        with self.lock:
            self.pending -= 1
        ticket.resolve(result)


class _Jobs:
    """The scheduler's queue as `InFlight` jobs: the next request, or None when none is waiting."""

    def __init__(self, scheduler: Scheduler):
        self.scheduler = scheduler

    def __iter__(self) -> _Jobs:
        return self

    def __next__(self) -> tuple[int, Coroutine] | None:
        return self.scheduler._next()
