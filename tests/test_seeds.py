"""Every seed network family trains on the embedded digits set and reaches 80% within 3 epochs."""

from __future__ import annotations

import pytest

from nngpt_ray.corpus import seed_entries
from nngpt_ray.harness import evaluate
from nngpt_ray.spec import CandidateSpec, Hyperparameters

SEEDS = seed_entries()


def test_at_least_twelve_families():
    assert len(SEEDS) >= 12
    assert all(s.description and s.hyperparameters for s in SEEDS)


@pytest.mark.parametrize("seed", SEEDS, ids=lambda s: s.name)
def test_seed_trains_on_digits(seed, digits, sandbox_config):
    spec = CandidateSpec(code=seed.code, hyperparameters=Hyperparameters(**seed.hyperparameters, epochs=3))
    result = evaluate(spec, digits, sandbox_config)
    assert result.failure is None, result.error
    accuracies = [round(e.val_accuracy, 3) for e in result.epochs]
    print(f"SEED {seed.name}: {accuracies} params={result.params}")
    assert len(accuracies) == 3
    assert max(accuracies) >= 0.80
