"""LoRA supervised fine-tuning with peft: one adapter version per call.

Each version starts from the previous adapter (or a fresh one) and is trained on the latest
accepted (prompt, completion) pairs with linear warm-up and cosine decay, then saved as its own
directory. The base weights are never changed, so any version can be served or compared later.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

from nngpt_ray.config import LearnerConfig
from nngpt_ray.llm import batches, encode_examples

# Attention and MLP projections of Llama/Qwen/Mistral-style models (the embedded model is a Llama).
DEFAULT_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass(frozen=True)
class AdapterReport:
    path: str
    examples: int
    steps: int
    loss: float
    seconds: float


def train_adapter(base, tokenizer, examples: list[tuple[str, str]], out_dir: Path, cfg: LearnerConfig,
                  previous: Path | None = None, seed: int = 0, max_len: int = 1024) -> AdapterReport:
    """Train a LoRA adapter on `examples` (rendered prompt, completion) and save it to `out_dir`.

    `base` is left as it was (the LoRA layers are removed again before returning)."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model

    started = time.monotonic()
    torch.manual_seed(seed)
    if previous is not None:
        model = PeftModel.from_pretrained(base, str(previous), is_trainable=True)
    else:
        targets = cfg.target_modules or [t for t in DEFAULT_TARGETS if any(n.endswith(t) for n, _ in base.named_modules())]
        model = get_peft_model(base, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                                target_modules=targets, task_type="CAUSAL_LM"))
    try:
        return _train(model, tokenizer, examples, out_dir, cfg, seed, max_len, started)
    finally:
        model.unload()  # strip the LoRA layers, even after an error: `base` is the plain base model again


def _train(model, tokenizer, examples, out_dir, cfg, seed, max_len, started) -> AdapterReport:
    import torch
    from transformers import get_cosine_schedule_with_warmup

    encoded = encode_examples(tokenizer, examples, max_len)
    steps_per_epoch = math.ceil(len(encoded) / cfg.batch_size)
    total = max(1, steps_per_epoch * cfg.epochs)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=0.0)
    scheduler = get_cosine_schedule_with_warmup(optimizer, int(total * cfg.warmup_ratio), total)
    rng = random.Random(seed)
    device = next(model.parameters()).device
    model.train()
    losses = []
    for _ in range(cfg.epochs):
        for ids, labels, mask in batches(encoded, cfg.batch_size, tokenizer.pad_token_id, rng):
            loss = model(input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device)).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            losses.append(loss.item())
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    tail = losses[-steps_per_epoch:] or [math.nan]
    return AdapterReport(str(out_dir), len(encoded), len(losses), sum(tail) / len(tail), time.monotonic() - started)
