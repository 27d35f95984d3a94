"""The LLM deployment (real Ray Serve) and the learner actor (real peft LoRA): an adapter switch is
observed in generation, with no restart of the deployment."""

from __future__ import annotations

import time

import pytest

from nngpt_ray.config import Config
from nngpt_ray.corpus import seed_entries
from nngpt_ray.datasets import dataset_info
from nngpt_ray.spec import Transform
from nngpt_ray.tasks.fill import FillTask

TARGET = "        self.device = device\n### hyperparameters: {\"lr\": 0.0123}\n### end"


@pytest.fixture(scope="module")
def llm_setup(ray_session, tiny_model):
    from nngpt_ray.actors.learner import LearnerActor
    from nngpt_ray.serve.app import deploy

    cfg = Config.model_validate({"llm": {"model": str(tiny_model), "num_cpus": 0.5},
                                 "learner": {"epochs": 40, "lr": 0.01, "batch_size": 4, "lora_r": 8,
                                             "warmup_ratio": 0.0}})
    handle = deploy(cfg, "nngpt-llm-test")
    learner = LearnerActor.remote(cfg.model_dump(mode="json"))
    yield cfg, handle, learner
    from ray import serve

    serve.delete("nngpt-llm-test")
    ray_session.kill(learner)


def test_adapter_switch_is_observed_in_generation(llm_setup, tmp_path):
    cfg, handle, learner = llm_setup
    prompt = FillTask(dataset_info("digits"), 2, Transform()).prompt_for(seed_entries()[0]).payload()
    greedy = {"max_new_tokens": 40, "temperature": 0.0, "stop": ["### end"]}
    before = handle.generate.remote([prompt], greedy, None).result()["texts"][0]
    assert not before.startswith(TARGET)

    report = learner.update.remote(str(tmp_path / "v1"), examples=[(prompt, TARGET)] * 4)
    import ray

    report = ray.get(report)
    assert (tmp_path / "v1" / "adapter_config.json").exists() and report.steps > 0
    adapter = {"name": "test-v1", "version": 1, "path": report.path}
    info_before = handle.status.remote().result()
    after = handle.generate.remote([prompt], greedy, adapter).result()["texts"][0]
    assert after.startswith(TARGET), after
    info_after = handle.status.remote().result()
    assert info_after["pid"] == info_before["pid"]  # same replica process: switched without a restart
    assert "test-v1" in info_after["adapters"]
    # the base model is still there, unchanged, for requests that name no adapter
    assert handle.generate.remote([prompt], greedy, None).result()["texts"][0] == before


def test_a_second_version_builds_on_the_first(llm_setup, tmp_path):
    """The learner is seeded, so an update that ignored `previous` would produce exactly the adapter a fresh
    update on the same examples produces. v2 must differ from that, and serve its own lesson."""
    cfg, handle, learner = llm_setup
    import ray
    from safetensors.torch import load_file

    first_prompt, second_prompt = {"text": "### task: fill\n### dataset: digits\n"}, {"text": "### task: other\n"}
    first = ray.get(learner.update.remote(str(tmp_path / "v1"), examples=[(first_prompt, "nn.Conv2d ### end")] * 8))
    second = ray.get(learner.update.remote(str(tmp_path / "v2"), examples=[(second_prompt, "nn.Linear ### end")] * 8,
                                           previous=first.path, sft_from_previous=True))
    fresh = ray.get(learner.update.remote(str(tmp_path / "v2f"), examples=[(second_prompt, "nn.Linear ### end")] * 8))
    again = ray.get(learner.update.remote(str(tmp_path / "v2g"), examples=[(second_prompt, "nn.Linear ### end")] * 8))
    weights = {name: load_file(f"{path}/adapter_model.safetensors") for name, path in
               (("second", second.path), ("fresh", fresh.path), ("again", again.path))}
    assert all((weights["fresh"][k] == weights["again"][k]).all() for k in weights["fresh"])  # seeded: repeatable
    assert any(not (weights["second"][k] == weights["fresh"][k]).all() for k in weights["fresh"])  # v1 was the start
    greedy = {"max_new_tokens": 12, "temperature": 0.0, "stop": ["### end"]}
    v2 = handle.generate.remote([second_prompt], greedy, {"name": "t2-v2", "version": 2,
                                                          "path": second.path}).result()["texts"]
    v1 = handle.generate.remote([first_prompt], greedy, {"name": "t2-v1", "version": 1,
                                                         "path": first.path}).result()["texts"]
    assert v2[0].startswith("nn.Linear") and v1[0].startswith("nn.Conv2d"), (v1, v2)


def test_a_cancelled_request_stops_generating(llm_setup):
    """Cancelling a long generation frees the engine at once: the next request does not wait for it."""
    cfg, handle, _ = llm_setup
    prompt = {"text": "### task: fill\n"}
    unbounded = {"max_new_tokens": 900, "temperature": 1.0, "stop": []}
    started = time.monotonic()
    handle.generate.remote([prompt] * 6, unbounded, None).result()
    long_s = time.monotonic() - started
    response = handle.generate.remote([prompt] * 6, unbounded, None)
    time.sleep(0.5)
    response.cancel()
    started = time.monotonic()
    short = handle.generate.remote([prompt], {"max_new_tokens": 4, "temperature": 0.0, "stop": []}, None).result()
    waited = time.monotonic() - started
    assert len(short["texts"]) == 1 and short["tokens"] == 4 and waited < long_s / 3, (waited, long_s)


def test_a_running_deployment_with_the_same_settings_is_kept_and_other_settings_replace_it(llm_setup):
    """What `--resume` after a SIGKILLed driver relies on: deploying the run's application again keeps the
    replica that is still serving (no model load, its adapters kept); different settings replace it."""
    from nngpt_ray.serve.app import deploy

    cfg, handle, _ = llm_setup
    before = handle.status.remote().result()
    kept = deploy(cfg, "nngpt-llm-test").status.remote().result()
    assert kept["pid"] == before["pid"] and kept["started"] == before["started"]
    assert kept["adapters"] == before["adapters"]
    changed = cfg.model_copy(update={"llm": cfg.llm.model_copy(update={"threads": 2})})
    replaced = deploy(changed, "nngpt-llm-test").status.remote().result()
    assert replaced["started"] > before["started"] and not replaced["adapters"]


def test_weights_replaced_at_the_same_path_are_other_settings(tmp_path):
    """A resume must not keep a replica serving the old weights of a model whose files were replaced in
    place: the settings' fingerprint includes the files' sizes and modification times."""
    import os

    from nngpt_ray.serve.app import _settings

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"0" * 64)
    cfg = Config.model_validate({"llm": {"model": str(model)}})
    first = _settings(cfg)[0]
    assert _settings(cfg)[0] == first  # nothing changed: the same settings
    os.utime(model / "model.safetensors", ns=(time.time_ns(), time.time_ns() + 10**9))
    assert _settings(cfg)[0] != first
    again = _settings(cfg)[0]
    (model / "model.safetensors").write_bytes(b"1" * 65)
    assert _settings(cfg)[0] != again
    hub = cfg.model_copy(update={"llm": cfg.llm.model_copy(update={"model": "Qwen/not-a-local-path"})})
    assert '"files": null' in _settings(hub)[0]
