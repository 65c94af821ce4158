"""Train the bundled demo MoE: an OLMoE-like model (32 experts, top-4) on the domains of ttscale.demo.data.

    python recipes/train_demo_model.py --out ttscale/demo/model          # the bundled checkpoint
    python recipes/train_demo_model.py --steps 5 --out /tmp/mini          # a smoke run

Each training sequence is SHOTS + 1 solved examples, each of its own domain, cued truthfully; held-out
evaluation inputs never appear. Experts are assigned to domains in groups of NUM_EXPERTS / 4: while
training, from an example's cue word to its end every router picks its top-4 among its domain's group
only, and is taught (a cross-entropy against a target distribution, weight --group-weight) to spread
1 - --partner-share of its mass evenly over that group and the rest evenly over the partner rule's
group, whose experts it never picks there. So the partner rule's experts are every router's
runners-up, log((1 - s) / s) below (1.4 for s = 0.2): close enough that router deltas can reach them,
never trained on the other rule. The tokens before a cue are routed freely. At inference
nothing is masked: the router alone decides, and the experts it picks decide which rule is computed.

Deterministic for a seed (CPU). Saves model and tokenizer with `save_pretrained` (safetensors, fp32)
and `training.json` with the settings and the loss curve.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
import types
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models
from transformers import OlmoeConfig, OlmoeForCausalLM, PreTrainedTokenizerFast

from ttscale.demo.data import ALPHABET, DOMAINS_ORDER, PARTNER, example, training_examples
from ttscale.demo.task import held_out_inputs
from ttscale.routing.families import find_routers

SPECIALS = ["<pad>", "<eos>", "<unk>"]
NUM_EXPERTS, TOP_K = 32, 4
GROUP = NUM_EXPERTS // len(DOMAINS_ORDER)        # experts per domain: domain i owns [i*GROUP, (i+1)*GROUP)


def build_tokenizer() -> PreTrainedTokenizerFast:
    """One token per character of the demo alphabet."""
    vocab = {token: i for i, token in enumerate(SPECIALS + ALPHABET)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tokenizer.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="<eos>",
                                   unk_token="<unk>")


def build_model(vocab_size: int) -> OlmoeForCausalLM:
    config = OlmoeConfig(vocab_size=vocab_size, hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                         num_key_value_heads=4, intermediate_size=64, num_experts=NUM_EXPERTS,
                         num_experts_per_tok=TOP_K, max_position_embeddings=2048, pad_token_id=0, eos_token_id=1,
                         bos_token_id=None, tie_word_embeddings=False, router_aux_loss_coef=0.01)
    return OlmoeForCausalLM(config)


def training_batch(rng: random.Random, exclude: set[str], size: int) -> tuple[list[str], torch.Tensor]:
    """`size` sequences and their per-character domain labels `[size, T]` (-1: routed freely, or padding)."""
    texts, labels = [], []
    for _ in range(size):
        text, label = "", []
        for rule, question, solution in training_examples(rng, exclude):
            part = example(question, solution)
            free = len("Q: ")                            # the cue comes next: until then the domain is unknown
            text += part
            label += [-1] * free + [DOMAINS_ORDER.index(rule)] * (len(part) - free)
        texts.append(text)
        labels.append(label)
    width = max(map(len, labels))
    return texts, torch.tensor([row + [-1] * (width - len(row)) for row in labels])


class GroupRouting:
    """Installs the training-time routing into every router: domain masks and the group loss."""

    def __init__(self, model: OlmoeForCausalLM, partner_share: float):
        experts = torch.arange(NUM_EXPERTS) // GROUP
        self.owns = experts[None, :] == torch.arange(len(DOMAINS_ORDER))[:, None]     # [domains, E]
        self.partner = torch.tensor([DOMAINS_ORDER.index(PARTNER[d]) for d in DOMAINS_ORDER])
        self.share = partner_share
        self.labels = torch.empty(0, dtype=torch.long)
        self.losses: list[torch.Tensor] = []
        for site in find_routers(model):
            self._install(site)

    def _install(self, site) -> None:
        rule, owner = site.rule, self

        def forward(router, hidden_states):
            hidden = hidden_states.reshape(-1, hidden_states.shape[-1])
            logits = rule.logits(router, hidden).float()
            labels = owner.labels.reshape(-1)
            known = labels >= 0
            own = owner.owns[labels.clamp(min=0)] | ~known[:, None]
            partner = owner.owns[owner.partner[labels.clamp(min=0)]] & known[:, None]
            logp = logits.log_softmax(-1)
            target = ((1 - owner.share) * own.float() + owner.share * partner.float()) / GROUP
            owner.losses.append(-(target * logp.clamp(min=-1e4)).sum(-1)[known].sum() / known.sum().clamp(min=1))
            probs = logp.exp()                       # the router's weights, as at inference (no renormalisation)
            indices = probs.masked_fill(~own, -1.0).topk(router.top_k, dim=-1).indices
            return logits.to(hidden.dtype), probs.gather(1, indices).to(hidden.dtype), indices

        site.router.forward = types.MethodType(forward, site.router)

    def group_loss(self) -> torch.Tensor:
        loss, self.losses = torch.stack(self.losses).mean(), []
        return loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=24)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--group-weight", type=float, default=1.0)
    parser.add_argument("--partner-share", type=float, default=0.2,
                        help="router mass taught to go to the partner rule's experts (never picked in training)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = random.Random(args.seed)
    tokenizer = build_tokenizer()
    model = build_model(len(tokenizer))
    routing = GroupRouting(model, args.partner_share)
    exclude = held_out_inputs()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.95))
    warmup = max(1, args.steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (
        1 + math.cos(math.pi * min(1.0, s / args.steps))))
    model.train()
    losses, group_losses, start = [], [], time.time()
    for step in range(args.steps):
        texts, routing.labels = training_batch(rng, exclude, args.batch)
        batch = tokenizer(texts, return_tensors="pt", padding=True)
        assert batch["input_ids"].shape == routing.labels.shape, "one token per character"
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        out = model(**batch, labels=labels, output_router_logits=True)
        group = routing.group_loss()
        (out.loss + args.group_weight * group).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(round(out.loss.item(), 4))
        group_losses.append(round(group.item(), 4))
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step:5d}  loss {out.loss.item():.4f}  group {group.item():.4f}  "
                  f"{time.time() - start:.0f}s", flush=True)
    model.eval()
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    record = {"seed": args.seed, "steps": args.steps, "batch": args.batch, "lr": args.lr,
              "group_weight": args.group_weight, "partner_share": args.partner_share, "experts_per_domain": {d: [i * GROUP, (i + 1) * GROUP - 1]
                                                                       for i, d in enumerate(DOMAINS_ORDER)},
              "seconds": round(time.time() - start, 1), "torch": torch.__version__,
              "loss_every_100": losses[::100], "group_loss_every_100": group_losses[::100],
              "final_loss": round(sum(losses[-50:]) / len(losses[-50:]), 4)}
    (args.out / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"saved to {args.out} ({record['seconds']} s)")


if __name__ == "__main__":
    main()
