"""Every seed network family trains on the embedded digits set and reaches 80% within 3 epochs."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from nngpt_ray.config import SandboxConfig
from nngpt_ray.corpus import seed_entries
from nngpt_ray.harness import evaluate
from nngpt_ray.sandbox.process import ForkServer
from nngpt_ray.spec import CandidateSpec, Hyperparameters

SEEDS = seed_entries()


def test_at_least_twelve_families():
    assert len(SEEDS) >= 12
    assert all(s.description and s.hyperparameters for s in SEEDS)


@pytest.fixture(scope="module")
def trained(digits, tmp_path_factory) -> dict:
    """Every seed trained for 3 epochs: two sandboxes side by side (one thread each, as two trainers run),
    each with its own fork server, half of the seeds each."""
    sandbox = SandboxConfig(timeout_s=120, scratch_root=tmp_path_factory.mktemp("scratch"))

    def train_half(owner: str, half: list) -> dict:
        with ForkServer(owner) as server:
            return {seed.name: evaluate(CandidateSpec(code=seed.code, hyperparameters=Hyperparameters(
                **seed.hyperparameters, epochs=3)), digits, sandbox, server=server) for seed in half}

    with ThreadPoolExecutor(2) as pool:
        halves = pool.map(train_half, ["seeds-even", "seeds-odd"], [SEEDS[0::2], SEEDS[1::2]])
    return {name: result for half in halves for name, result in half.items()}


@pytest.mark.parametrize("seed", SEEDS, ids=lambda s: s.name)
def test_seed_trains_on_digits(seed, trained):
    result = trained[seed.name]
    assert result.failure is None, result.error
    accuracies = [round(e.val_accuracy, 3) for e in result.epochs]
    print(f"SEED {seed.name}: {accuracies} params={result.params}")
    assert len(accuracies) == 3
    assert max(accuracies) >= 0.80
