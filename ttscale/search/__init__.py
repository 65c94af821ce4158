"""Searches decide how many branches exist, how they grow and which answer wins."""

from ttscale.search.base import SEARCHES, Context, Outcome, Search, register
from ttscale.search import greedy, sc, bon, beam  # noqa: F401,I001  (registration, in listing order)

__all__ = ["SEARCHES", "Context", "Outcome", "Search", "register"]
