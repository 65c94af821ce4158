"""Generation throughput of the SGLang backend next to the hf backend, on the same requests, in one run.

    python recipes/sglang_throughput.py --device cpu --requests 32 --new-tokens 64 --out sglang-throughput.json

Run it where sglang is installed (on CPU: `.ci/sglang-env/bin/python`, docs/sglang.md). Both backends
grow the same branches (the demo task's first prompts, each with its own seed, temperature 1 so no
branch stops early on a shared greedy path) in one `extend` call each; every branch has `--new-tokens`
tokens or fewer (EOS). Throughput = generated tokens / wall seconds of that call, after one warm-up
call per backend. Prints both and the ratio; `--out` writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ttscale.backends.hf import HFBackend
from ttscale.backends.sampling import Sampling
from ttscale.backends.sglang_engine import SGLangBackend
from ttscale.demo import DEMO_MODEL, DEMO_TASK
from ttscale.tasks import load_task


def measure(backend, prompts, new_tokens: int) -> dict:
    sampling = Sampling(temperature=1.0, max_new_tokens=new_tokens)
    backend.extend([backend.new_branch(prompts[0], seed=10_000)], sampling)            # warm-up
    branches = [backend.new_branch(p, seed=i) for i, p in enumerate(prompts)]
    start = time.perf_counter()
    backend.extend(branches, sampling)
    seconds = time.perf_counter() - start
    tokens = sum(len(b.generated) for b in branches)
    return {"requests": len(branches), "generated_tokens": tokens, "seconds": round(seconds, 3),
            "tok_s": round(tokens / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(DEMO_MODEL))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    task = load_task(DEMO_TASK)
    prompts = [task.messages(p) for p in task.load(args.requests)]
    sgl = SGLangBackend(args.model, device=args.device)
    try:
        result = {"sglang": measure(sgl, prompts, args.new_tokens)}
    finally:
        sgl.close()
    hf = HFBackend(args.model, device=args.device, batch_size=args.requests)
    result["hf"] = measure(hf, prompts, args.new_tokens)
    result["sglang_over_hf"] = round(result["sglang"]["tok_s"] / result["hf"]["tok_s"], 2)
    result["setup"] = {"model": args.model, "device": args.device, "sglang_dtype": "bfloat16" if args.device == "cpu"
                       else "auto", "hf_dtype": str(hf.model.dtype).removeprefix("torch."),
                       "new_tokens": args.new_tokens}
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
