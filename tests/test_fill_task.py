"""The compact `fill` task and the code surgery under it."""

from __future__ import annotations

import random

import pytest

from nngpt_ray.corpus import seed_entries
from nngpt_ray.datasets import dataset_info
from nngpt_ray.failures import FailureKind
from nngpt_ray.parsing import ParseFailure
from nngpt_ray.spec import Origin, Transform
from nngpt_ray.surgery import MASK, mutate, split
from nngpt_ray.tasks.fill import FillTask, completion_for

SEEDS = seed_entries()
TASK = FillTask(dataset_info("digits"), 2, Transform())


@pytest.mark.parametrize("seed", SEEDS, ids=lambda s: s.name)
def test_split_and_round_trip(seed):
    parts = split(seed.code)
    assert parts.before + parts.region + parts.after == seed.code
    assert parts.region.lstrip().startswith("self.device = device")
    prompt = TASK.prompt_for(seed)
    assert MASK.strip() in prompt.text and "def learn" not in prompt.text and "import torch" not in prompt.text
    spec = TASK.parse(prompt, completion_for(seed.code, seed.hyperparameters) + "\nanything after the end",
                      Origin(task="fill"))
    assert split(spec.code).region == parts.region
    assert spec.hyperparameters.lr == seed.hyperparameters["lr"] and spec.hyperparameters.epochs == 2
    assert f'# hyperparameters: {{"lr": {seed.hyperparameters["lr"]}' in spec.code


def test_mutation_changes_only_the_region():
    seed = next(s for s in SEEDS if s.name == "plain_cnn")
    parts = split(seed.code)
    rng = random.Random(3)
    mutants = {mutate(seed.code, rng, steps=2) for _ in range(20)}
    assert len(mutants) > 10
    for m in mutants:
        mp = split(m)
        assert (mp.before, mp.after) == (parts.before, parts.after)


@pytest.mark.parametrize("completion, kind, words", [
    ("", FailureKind.PARSE, "no layer definitions"),
    ("        self.fc = nn.Linear(4, out_shape[0])\n", FailureKind.PARSE, "no '### hyperparameters:' line"),
    ("        self.fc = nn.Linear(4, out_shape[0])\n### hyperparameters: {lr: 0.1\n### end", FailureKind.PARSE, "not JSON"),
    ("        self.fc = nn.Linear(4, out_shape[0]\n### hyperparameters: {\"lr\": 0.1}\n### end", FailureKind.SYNTAX,
     "SyntaxError: '(' was never closed"),
    ("        import os\n### hyperparameters: {\"lr\": 0.1}\n### end", FailureKind.UNSAFE, "'os'"),
    ("        self.fc = nn.Linear(4, out_shape[0])\n### hyperparameters: {\"lr\": -1}\n### end", FailureKind.PARSE,
     "bad hyperparameters"),
])
def test_bad_completions(completion, kind, words):
    assert words  # every case names what its diagnostic must say
    prompt = TASK.prompt_for(SEEDS[0])
    with pytest.raises(ParseFailure) as info:
        TASK.parse(prompt, completion, Origin(task="fill"))
    assert info.value.kind == kind and words in info.value.diagnostic


def test_missing_declared_hyperparameter_gets_its_default():
    seed = next(s for s in SEEDS if s.name == "plain_cnn")  # declares dropout
    completion = completion_for(seed.code, {"lr": 0.05, "momentum": 0.9, "batch": 32})
    spec = TASK.parse(TASK.prompt_for(seed), completion, Origin(task="fill"))
    assert spec.hyperparameters.model_extra["dropout"] == 0.2
