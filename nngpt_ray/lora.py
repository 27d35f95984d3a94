"""LoRA supervised fine-tuning with peft: one adapter version per call.

A version starts from a fresh adapter (or, with `learner.continue_adapter`, from the previous one) and is
trained on weighted (prompt, completion) pairs with linear warm-up and cosine decay, then saved as its
own directory. The base weights are never changed, so any version can be served or compared later.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from nngpt_ray.config import LearnerConfig
from nngpt_ray.llm import batches, encode_examples, token_logprobs

# Attention and MLP projections of Llama/Qwen/Mistral-style models (the embedded model is a Llama).
DEFAULT_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass(frozen=True)
class AdapterReport:
    path: str
    examples: int
    steps: int
    loss: float
    seconds: float


@contextlib.contextmanager
def attached(base, cfg: LearnerConfig, previous: Path | None = None) -> Iterator:
    """`base` with a trainable LoRA adapter (loaded from `previous`, or fresh); the LoRA layers are
    stripped again when the block ends, even after an error, so `base` is the plain base model again."""
    from peft import LoraConfig, PeftModel, get_peft_model

    if previous is not None:
        model = PeftModel.from_pretrained(base, str(previous), is_trainable=True)
    else:
        targets = cfg.target_modules or [t for t in DEFAULT_TARGETS if any(n.endswith(t) for n, _ in base.named_modules())]
        model = get_peft_model(base, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                                target_modules=targets, task_type="CAUSAL_LM"))
    try:
        yield model
    finally:
        model.unload()


def make_optimizer(model, cfg: LearnerConfig, lr: float):
    """AdamW over the adapter's parameters; with QLoRA, bitsandbytes' paged AdamW (its states page to host
    memory under pressure instead of failing)."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.quantization == "4bit":
        import bitsandbytes as bnb

        return bnb.optim.PagedAdamW(params, lr=lr, weight_decay=0.0)
    return torch.optim.AdamW(params, lr=lr, weight_decay=0.0)


def optimizer_step(model, optimizer, loss, scheduler=None) -> float:
    """Backpropagate `loss`, clip the gradient norm to 1, step (and the schedule); returns the loss value."""
    import torch

    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    optimizer.zero_grad()
    return loss.item()


def train_adapter(base, tokenizer, examples: list[tuple], out_dir: Path, cfg: LearnerConfig,
                  previous: Path | None = None, seed: int = 0, max_len: int = 1024) -> AdapterReport:
    """Train a LoRA adapter on `examples` (rendered prompt, completion[, weight]) and save it to `out_dir`.
    The loss of each example is its completion's mean token loss, times its weight."""
    import torch

    started = time.monotonic()
    torch.manual_seed(seed)
    with attached(base, cfg, previous) as model:
        return _train(model, tokenizer, examples, out_dir, cfg, seed, max_len, started)


def _train(model, tokenizer, examples, out_dir, cfg, seed, max_len, started) -> AdapterReport:
    from transformers import get_cosine_schedule_with_warmup

    encoded = encode_examples(tokenizer, examples, max_len)
    steps_per_epoch = math.ceil(len(encoded) / cfg.batch_size)
    total = max(1, steps_per_epoch * cfg.epochs)
    optimizer = make_optimizer(model, cfg, cfg.lr)
    scheduler = get_cosine_schedule_with_warmup(optimizer, int(total * cfg.warmup_ratio), total)
    rng = random.Random(seed)
    device = next(model.parameters()).device
    model.train()
    losses = []
    for _ in range(cfg.epochs):
        for ids, labels, mask, weights in batches(encoded, cfg.batch_size, tokenizer.pad_token_id, rng):
            logprobs, scored = token_logprobs(model, ids.to(device), mask.to(device), labels.to(device))
            per_example = -logprobs.sum(1) / scored.sum(1).clamp(min=1)
            weights = weights.to(device)
            loss = (per_example * weights).sum() / weights.sum()
            losses.append(optimizer_step(model, optimizer, loss, scheduler))
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    tail = losses[-steps_per_epoch:] or [math.nan]
    return AdapterReport(str(out_dir), len(encoded), len(losses), sum(tail) / len(tail), time.monotonic() - started)
