"""The paper's table: base model vs continuous rerouting on its models and benchmarks, with its settings.

    python recipes/paper_table.py --out runs/paper                      # where the hub is reachable
    python recipes/paper_table.py --models demo --tasks gsm8k --limit 5 --set sample.max_new_tokens=32

Each (model, task, strategy) is an ordinary resumable `ttscale run` into OUT/<model>/<task>/<strategy>.
`--sc N` adds self-consistency with and without rerouting (the paper's DeepSeek-V2-Lite + SC result).
Writes OUT/paper_table.md: accuracy per cell and rerouting's gain in points.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from ttscale.backends import load_backend
from ttscale.runs import RunConfig, execute

MODELS = ("allenai/OLMoE-1B-7B-0924-Instruct", "Qwen/Qwen1.5-MoE-A2.7B-Chat", "deepseek-ai/DeepSeek-V2-Lite-Chat")
TASKS = ("humaneval", "mbpp", "gsm8k", "math500", "mmlu")


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text.strip("./")) or "model"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--limit", type=int)
    parser.add_argument("--sc", type=int, default=0, help="also run sc@N and reroute+sc@N")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/paper"))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()

    pairs = [("greedy", "reroute", 1)] + ([("sc", "reroute+sc", args.sc)] if args.sc else [])
    lines = ["| model | task | " + " | ".join(f"{b} | {r} | gain" for b, r, _ in pairs) + " |",
             "|---|---|" + "---|---|---|" * len(pairs)]
    for model in args.models:
        backend = load_backend("hf", model)
        for task in args.tasks:
            cells = []
            for base, rerouted, n in pairs:
                accuracy = {}
                for strategy in (base, rerouted):
                    cfg = RunConfig(model=model, task=task, strategy=strategy, n=n, limit=args.limit, seed=args.seed,
                                    overrides=args.overrides)
                    out = args.out / slug(model) / task / strategy.replace("+", "-")
                    accuracy[strategy] = execute(cfg, out, backend=backend)["accuracy"] or 0.0
                gain = 100 * (accuracy[rerouted] - accuracy[base])
                cells += [f"{100 * accuracy[base]:.1f}", f"{100 * accuracy[rerouted]:.1f}", f"{gain:+.1f}"]
            lines.append(f"| {model} | {task} | " + " | ".join(cells) + " |")
            print(lines[-1])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "paper_table.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
