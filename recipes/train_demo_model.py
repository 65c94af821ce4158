"""Train the bundled demo MoE: a small OLMoE on the synthetic domains of ttscale.demo.data.

    python recipes/train_demo_model.py --out ttscale/demo/model          # the bundled checkpoint
    python recipes/train_demo_model.py --steps 5 --out /tmp/mini          # a smoke run

Deterministic for a seed (CPU). Sequences are SHOTS + 1 solved examples of one domain, as the demo
prompts are; held-out evaluation questions never appear. Saves model and tokenizer with
`save_pretrained` (safetensors, fp32) and `training.json` with the settings and the loss curve.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models
from transformers import OlmoeConfig, OlmoeForCausalLM, PreTrainedTokenizerFast

from ttscale.demo.data import ALPHABET, TRAINING_MIX, training_sequence
from ttscale.demo.task import held_out_questions

SPECIALS = ["<pad>", "<eos>", "<unk>"]


def build_tokenizer() -> PreTrainedTokenizerFast:
    """One token per character of the demo alphabet."""
    vocab = {token: i for i, token in enumerate(SPECIALS + ALPHABET)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tokenizer.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="<eos>",
                                   unk_token="<unk>")


def build_model(vocab_size: int) -> OlmoeForCausalLM:
    config = OlmoeConfig(vocab_size=vocab_size, hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                         num_key_value_heads=4, intermediate_size=128, num_experts=8, num_experts_per_tok=2,
                         max_position_embeddings=512, pad_token_id=0, eos_token_id=1, bos_token_id=None,
                         tie_word_embeddings=False, router_aux_loss_coef=0.01)
    return OlmoeForCausalLM(config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = random.Random(args.seed)
    tokenizer = build_tokenizer()
    model = build_model(len(tokenizer))
    exclude = held_out_questions()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.95))
    warmup = max(1, args.steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (
        1 + math.cos(math.pi * min(1.0, s / args.steps))))
    model.train()
    losses, start = [], time.time()
    for step in range(args.steps):
        batch = tokenizer([training_sequence(rng, exclude) for _ in range(args.batch)], return_tensors="pt",
                          padding=True)
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        out = model(**batch, labels=labels, output_router_logits=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(round(out.loss.item(), 4))
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step:5d}  loss {out.loss.item():.4f}  {time.time() - start:.0f}s", flush=True)
    model.eval()
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    record = {"seed": args.seed, "steps": args.steps, "batch": args.batch, "lr": args.lr, "mix": TRAINING_MIX,
              "seconds": round(time.time() - start, 1), "torch": torch.__version__, "loss_every_100": losses[::100],
              "final_loss": sum(losses[-50:]) / len(losses[-50:])}
    (args.out / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"saved to {args.out} ({record['seconds']} s)")


if __name__ == "__main__":
    main()
