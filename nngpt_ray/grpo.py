"""GRPO on the LoRA adapter, with rewards from the real pipeline.

A *group* is G completions of one prompt, sampled by the active adapter with their token ids and
log-probabilities recorded at generation (the old policy). Their rewards come from what the pipeline
made of them (`reward`): broken code is penalised, duplicates of earlier networks are penalised, a
network that trained earns its first-epoch validation accuracy plus a novelty term (how unlike the most
similar earlier network it is). Advantages are normalised within the group; a group whose rewards do
not differ teaches nothing and is skipped.

The update follows TRL's GRPO loss arithmetic: per completion token, the clipped probability ratio times
the advantage, minus a KL penalty to the reference policy (the base model, the adapter disabled) with
the k3 estimator; averaged over each completion's tokens, then over completions. It is a small loop of
its own because the rewards take minutes (a network has to train) and arrive from trainer actors, which
does not fit TRL's GRPOTrainer (it computes rewards inside its step).
"""

from __future__ import annotations

import math
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from nngpt_ray.config import LearnerConfig
from nngpt_ray.failures import FailureKind
from nngpt_ray.lora import AdapterReport, attached, make_optimizer, optimizer_step
from nngpt_ray.outcomes import INVALID

# Rewards for what the pipeline made of a completion that did not train (a trained one earns its accuracy).
PENALTY = {**{k.value: -1.0 for k in INVALID - {FailureKind.FORWARD}}, FailureKind.FORWARD.value: -0.5,
           FailureKind.DUPLICATE.value: -0.5, FailureKind.NEAR_DUPLICATE.value: -0.25}
RAN_BUT_FAILED = 0.0  # built and ran, then timed out, ran out of memory, diverged or crashed


@dataclass(frozen=True)
class Sample:
    prompt: str  # the rendered prompt, as the engine saw it
    completion_ids: list[int]  # the sampled tokens
    old_logprobs: list[float]  # their log-probabilities under the sampling policy
    reward: float
    temperature: float = 1.0  # the sampling temperature (the loop raises it when novelty falls)


def reward(status: str | None, first_epoch_accuracy: float | None, similarity: float | None,
           novelty_weight: float) -> float | None:
    """What a completion earned; None when the pipeline has no answer for it yet (still training)."""
    if status is None:
        return None
    if status in PENALTY:
        return PENALTY[status]
    if status in ("ok", FailureKind.STOPPED_EARLY.value):
        if first_epoch_accuracy is None:
            return None
        return first_epoch_accuracy + novelty_weight * (1.0 - (similarity or 0.0))
    return RAN_BUT_FAILED


def advantages(rewards: list[float]) -> list[float] | None:
    """Rewards normalised within their group; None when they do not differ (nothing to learn)."""
    if len(rewards) < 2:
        return None
    spread = statistics.pstdev(rewards)
    if spread < 1e-8:
        return None
    mean = statistics.fmean(rewards)
    return [(r - mean) / (spread + 1e-4) for r in rewards]


def grpo_update(base, tokenizer, groups: list[list[Sample]], out_dir: Path, cfg: LearnerConfig,
                previous: Path | None = None, seed: int = 0) -> AdapterReport:
    """`cfg.grpo_steps` passes over the groups that carry a signal, starting from `previous` (the adapter
    that sampled them, for an on-policy ratio). Raises UpdateFailed when no group does, or the loss is
    not finite."""
    import torch

    from nngpt_ray.learner import UpdateFailed

    started = time.monotonic()
    torch.manual_seed(seed)
    items = []
    for group in groups:
        adv = advantages([s.reward for s in group])
        if adv is None:
            continue
        for sample, a in zip(group, adv, strict=True):
            prompt_ids = tokenizer(sample.prompt, add_special_tokens=False)["input_ids"]
            if sample.completion_ids:
                items.append((prompt_ids, sample.completion_ids, sample.old_logprobs, a, sample.temperature))
    if not items:
        raise UpdateFailed(f"none of {len(groups)} groups had rewards that differ")
    rng = random.Random(seed)
    with attached(base, cfg, previous) as model:
        device = next(model.parameters()).device
        optimizer = make_optimizer(model, cfg, cfg.grpo_lr)
        model.train()
        losses = []
        for _ in range(cfg.grpo_steps):
            rng.shuffle(items)
            for start in range(0, len(items), cfg.batch_size):
                loss = _loss(model, items[start:start + cfg.batch_size], tokenizer.pad_token_id, cfg, device)
                if not torch.isfinite(loss):
                    raise UpdateFailed(f"the GRPO loss diverged ({loss.item()})")
                losses.append(optimizer_step(model, optimizer, loss))
        model.eval()
        out_dir.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(str(out_dir))
    tail = losses[-max(1, math.ceil(len(items) / cfg.batch_size)):]
    return AdapterReport(str(out_dir), len(items), len(losses), sum(tail) / len(tail), time.monotonic() - started)


def _loss(model, batch, pad_id: int, cfg: LearnerConfig, device):
    import torch

    from nngpt_ray.llm import token_logprobs

    width = max(len(p) + len(c) for p, c, *_ in batch)
    ids = torch.full((len(batch), width), pad_id)
    labels = torch.full((len(batch), width), -100)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    old = torch.zeros((len(batch), width - 1))
    for row, (p, c, old_lp, *_) in enumerate(batch):
        n = len(p) + len(c)
        ids[row, :n] = torch.tensor(p + c)
        labels[row, len(p):n] = torch.tensor(c)
        mask[row, :n] = 1
        old[row, len(p) - 1:n - 1] = torch.tensor(old_lp[:len(c)])
    advantage = torch.tensor([a for _, _, _, a, _ in batch], device=device).unsqueeze(1)
    temperature = torch.tensor([t for *_, t in batch], device=device)  # each row as it was sampled
    ids, labels, mask, old = ids.to(device), labels.to(device), mask.to(device), old.to(device)
    logprobs, scored = token_logprobs(model, ids, mask, labels, temperature)
    with torch.no_grad(), model.disable_adapter():
        reference, _ = token_logprobs(model, ids, mask, labels, temperature)
    ratio = torch.exp(logprobs - old)
    clipped = torch.clamp(ratio, 1 - cfg.grpo_clip, 1 + cfg.grpo_clip)
    policy = torch.minimum(ratio * advantage, clipped * advantage)
    delta = reference - logprobs
    kl = torch.exp(delta) - delta - 1  # k3: unbiased, non-negative
    per_token = -(policy - cfg.grpo_kl * kl) * scored
    return (per_token.sum(1) / scored.sum(1).clamp(min=1)).mean()
