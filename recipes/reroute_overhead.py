"""Wall time of `reroute` against `greedy` on one tiny random MoE model, same output length.

    python recipes/reroute_overhead.py --family olmoe --tokens 256

The random model's EOS is ignored so both strategies produce exactly --tokens tokens. Prints the
median of --repeats runs after a warm-up. Real model shapes and GPU numbers: `ttscale bench` (later).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from ttscale.backends.hf import HFBackend
from ttscale.backends.sampling import Sampling
from ttscale.generators import PlainGenerator, RerouteGenerator
from ttscale.routing.reroute import RerouteConfig
from ttscale.tiny import save_tiny_model
from ttscale.inflight import drive


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="olmoe")
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        backend = HFBackend(str(save_tiny_model(args.family, Path(tmp) / args.family)))
    backend.eos_ids = set()
    messages = [{"role": "user", "content": "What is 12 plus 30? Explain step by step."}]
    sampling = Sampling(max_new_tokens=args.tokens)

    def seconds(generator) -> float:
        branch = backend.new_branch(messages)
        start = time.perf_counter()
        drive(backend, generator.grow([branch], sampling))
        return time.perf_counter() - start

    generators = {"greedy": PlainGenerator(), "reroute": RerouteGenerator(RerouteConfig())}
    for generator in generators.values():
        seconds(generator)
    medians = {name: statistics.median(seconds(g) for _ in range(args.repeats)) for name, g in generators.items()}
    for name, s in medians.items():
        print(f"{name:8s} {s:.3f} s  ({args.tokens / s:.0f} tok/s)")
    print(f"reroute / greedy = {medians['reroute'] / medians['greedy']:.2f}x "
          f"({args.family}, {args.tokens} tokens, {args.threads} threads, torch {torch.__version__})")


if __name__ == "__main__":
    main()
