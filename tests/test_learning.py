"""The learner: a GRPO step moves probability toward the rewarded completion, the activation gate refuses
an adapter that collapsed, a diverging update fails cleanly, long examples keep what matters."""

from __future__ import annotations

import asyncio
import random

import pytest

from conftest import TINY_FAMILIES
from nngpt_ray.config import Config, load_config
from nngpt_ray.corpus import seed_entries
from nngpt_ray.datasets import dataset_info
from nngpt_ray.failures import ConfigError
from nngpt_ray.grpo import advantages, reward
from nngpt_ray.llm import fit_to_length
from nngpt_ray.spec import Transform
from nngpt_ray.tasks.fill import FillTask, completion_for

TASK = FillTask(dataset_info("digits"), 2, Transform())


@pytest.fixture(scope="module")
def learner_core(tiny_model):
    from nngpt_ray.learner import Learner

    cfg = Config.model_validate({"llm": {"model": str(tiny_model)},
                                 "learner": {"grpo_steps": 6, "grpo_lr": 5e-3, "grpo_kl": 0.01, "batch_size": 4}})
    return Learner(cfg)


def _logprob(model, tokenizer, prompt: str, ids: list[int]) -> float:
    import torch

    from nngpt_ray.llm import token_logprobs

    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    x = torch.tensor([p + ids])
    with torch.no_grad():
        logprobs, scored = token_logprobs(model, x, torch.ones_like(x), torch.tensor([[-100] * len(p) + ids]))
    return float(logprobs[scored].sum())


def test_a_grpo_step_favours_the_rewarded_completion(learner_core, tmp_path):
    """One group, one prompt: completion A rewarded, B penalised. After the update, log p(A) - log p(B)
    under the new adapter is larger than under the model that sampled them."""
    from peft import PeftModel

    core = learner_core
    seed = seed_entries(["plain_cnn"])[0]
    prompt = TASK.prompt_for(seed)
    good = completion_for(seed.code, {"lr": 0.05, "momentum": 0.9, "batch": 32})
    bad = completion_for(seed.code, {"lr": 0.9, "momentum": 0.5, "batch": 128})
    group = []
    for completion, r in ((good, 1.0), (bad, -1.0)):
        ids = core.tokenizer(completion, add_special_tokens=False)["input_ids"]
        old = _logprob(core.base, core.tokenizer, prompt.text, ids)
        group.append({"prompt": prompt.payload(), "tokens": ids, "reward": r, "temperature": 1.0,
                      "logprobs": _per_token(core, prompt.text, ids)})
        assert abs(sum(group[-1]["logprobs"]) - old) < 1e-3
    before = [_logprob(core.base, core.tokenizer, prompt.text, g["tokens"]) for g in group]
    report = core.update(str(tmp_path / "v1"), groups=[group])
    model = PeftModel.from_pretrained(core.base, report.path)
    try:
        after = [_logprob(model, core.tokenizer, prompt.text, g["tokens"]) for g in group]
    finally:
        model.unload()
    assert after[0] - after[1] > before[0] - before[1] + 0.5, (before, after)


def _per_token(core, prompt: str, ids: list[int]) -> list[float]:
    import torch

    from nngpt_ray.llm import token_logprobs

    p = core.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    x = torch.tensor([p + ids])
    with torch.no_grad():
        logprobs, scored = token_logprobs(core.base, x, torch.ones_like(x), torch.tensor([[-100] * len(p) + ids]))
    return logprobs[scored].tolist()


def test_a_group_without_a_signal_teaches_nothing(learner_core, tmp_path):
    from nngpt_ray.learner import UpdateFailed

    group = [{"prompt": {"text": "### task: fill\n"}, "tokens": [5, 6], "logprobs": [-1.0, -1.0], "reward": -1.0,
              "temperature": 1.0}] * 3  # every completion failed alike
    with pytest.raises(UpdateFailed, match="none of 1 groups had rewards that differ"):
        learner_core.update(str(tmp_path / "v1"), groups=[group])
    assert not (tmp_path / "v1").exists() and not list(tmp_path.glob("*.partial*"))


def test_a_diverging_update_fails_and_leaves_no_adapter(tiny_model, tmp_path):
    from nngpt_ray.learner import Learner, UpdateFailed

    core = Learner(Config.model_validate({"llm": {"model": str(tiny_model)},
                                          "learner": {"lr": 1e9, "epochs": 3, "warmup_ratio": 0.0}}))
    examples = [(TASK.prompt_for(s).payload(), completion_for(s.code, s.hyperparameters)) for s in seed_entries()]
    with pytest.raises(UpdateFailed, match="diverged"):
        core.update(str(tmp_path / "v1"), examples=examples)
    assert not (tmp_path / "v1").exists()


def test_rewards_and_advantages():
    assert reward(None, None, None, 0.5) is None  # still training: no reward yet
    assert reward("ok", None, None, 0.5) is None  # trained but the first epoch is unknown
    assert reward("parse", None, None, 0.5) == -1.0 and reward("duplicate", None, 1.0, 0.5) == -0.5
    assert reward("ok", 0.8, 0.4, 0.5) == pytest.approx(0.8 + 0.5 * 0.6)
    assert reward("timeout", 0.8, 0.4, 0.5) == 0.0
    assert advantages([1.0, 1.0, 1.0]) is None and advantages([0.5]) is None
    adv = advantages([1.0, 0.0])
    assert adv[0] > 0 > adv[1] and abs(sum(adv)) < 1e-9


def test_long_examples_keep_the_instructions_and_the_whole_completion():
    prompt, completion = list(range(1000)), list(range(5000, 5100))
    fitted_prompt, fitted_completion = fit_to_length(prompt, completion, 600)
    assert fitted_completion == completion and len(fitted_prompt) + len(completion) == 600
    assert fitted_prompt[:250] == prompt[:250] and fitted_prompt[-250:] == prompt[-250:]  # head and tail
    assert fit_to_length(prompt, list(range(590)), 600) is None  # no room left for a prompt: left out


@pytest.mark.parametrize("override, field", [("learner.group_size=1", "learner.group_size"),
                                             ("learner.grpo_kl=-0.01", "learner.grpo_kl")])
def test_configurations_that_cannot_work_are_refused_at_load(override, field):
    with pytest.raises(ConfigError, match=f"'{field}'"):
        load_config(None, [override])


@pytest.fixture(scope="module")
def gate_setup(ray_session, tiny_model, tmp_path_factory):
    from nngpt_ray.actors.dedup import DedupActor
    from nngpt_ray.actors.learner import LearnerActor
    from nngpt_ray.serve.app import deploy
    from nngpt_ray.store import Store

    tmp = tmp_path_factory.mktemp("gate")
    Store(tmp / "store.sqlite", create=True).close()
    cfg = Config.model_validate({"llm": {"model": str(tiny_model)}, "task": {"families": TINY_FAMILIES},
                                 "learner": {"epochs": 60, "lr": 0.01, "batch_size": 1, "warmup_ratio": 0.0}})
    handle = deploy(cfg, "nngpt-llm-gate-test")
    learner = LearnerActor.remote(cfg.model_dump(mode="json"))
    dedup = DedupActor.remote(cfg.dedup.model_dump(), str(tmp / "store.sqlite"))
    yield cfg, handle, learner, dedup, tmp
    from ray import serve

    serve.delete("nngpt-llm-gate-test")
    for actor in (learner, dedup):
        ray_session.kill(actor)


def test_the_gate_rejects_an_adapter_that_collapsed(gate_setup):
    """Overfit on a single example, an adapter answers every prompt the same way: on the fixed gate prompts
    its novel yield collapses, and the gate refuses it where the base model passes."""
    import ray

    from nngpt_ray.actors.controller import gate_sample
    from nngpt_ray.gate import decide
    from nngpt_ray.serve.engines.base import Adapter

    cfg, handle, learner, dedup, tmp = gate_setup
    seeds = seed_entries(TINY_FAMILIES)
    rng = random.Random(0)
    prompts = [TASK.prompt(seeds, rng) for _ in range(12)]
    one = seeds[0]
    report = ray.get(learner.update.remote(str(tmp / "collapsed"), examples=[
        (TASK.prompt_for(one).payload(), completion_for(one.code, one.hyperparameters))]))
    collapsed = Adapter(name="gate-collapsed", version=1, path=report.path)
    sampling = {"max_new_tokens": 256, "temperature": 0.9, "top_p": 1.0, "top_k": 0, "stop": list(TASK.stop),
                "seed": 7}

    async def measure():
        return (await gate_sample(handle, dedup, TASK, prompts, sampling, collapsed),
                await gate_sample(handle, dedup, TASK, prompts, sampling, None))

    staged, base = asyncio.run(measure())
    assert staged.novel <= 2  # two references among the prompts: at most two distinct networks
    assert base.novel_yield > staged.novel_yield + cfg.learner.gate_tolerance
    passed, reason = decide(staged, base, cfg.learner.gate_tolerance)
    assert not passed and "novel yield" in reason
    assert decide(base, base, cfg.learner.gate_tolerance)[0]  # an adapter as inventive as the active one passes
