"""ttscale: composable test-time scaling for Mixture-of-Experts language models.

The Python API (docs/api.md), imported lazily so that `import ttscale` stays cheap:

    from ttscale import Strategy, load_backend, load_task
"""

from importlib import import_module

__version__ = "0.1.0"

_API = {
    "Strategy": "ttscale.strategy",
    "load_backend": "ttscale.backends",
    "Sampling": "ttscale.backends.sampling",
    "load_task": "ttscale.tasks",
    "TaskSettings": "ttscale.tasks.registry",
    "Problem": "ttscale.tasks.base",
    "RunConfig": "ttscale.runs",
    "execute": "ttscale.runs",
    "RerouteConfig": "ttscale.routing.reroute",
    "PlainGenerator": "ttscale.generators",
    "RerouteGenerator": "ttscale.generators",
    "Greedy": "ttscale.search.greedy",
    "SelfConsistency": "ttscale.search.sc",
    "BestOfN": "ttscale.search.bon",
    "Beam": "ttscale.search.beam",
}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'ttscale' has no attribute {name!r}")
