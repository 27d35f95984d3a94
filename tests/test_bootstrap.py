"""The embedded model's build path, and the tiny model the test loops use (kept in tests/data)."""

from __future__ import annotations

import json
import math
import random

from tiny_model import TINY_MODEL, TINY_RECIPE

from nngpt_ray.bootstrap import REPLAY_FILE, Recipe, ensure_embedded_model, model_dir, training_examples


def test_the_kept_tiny_model_was_trained_on_what_the_current_seeds_and_prompts_give():
    """Fails when a seed network, a mutation or the fill prompt changed since the tiny model was built:
    the test loops would then generate from a model that learned something else."""
    kept = [(d["prompt"], d["completion"]) for d in map(json.loads, (TINY_MODEL / REPLAY_FILE).read_text().splitlines())]
    assert kept == training_examples(random.Random(TINY_RECIPE.seed), TINY_RECIPE), "tests/data/tiny-model is stale: rebuild it with `.venv/bin/python tests/tiny_model.py`"
    assert json.loads((TINY_MODEL / "manifest.json").read_text())["recipe"]["train_steps"] == TINY_RECIPE.train_steps


def test_a_short_build_is_cached_and_loads_as_a_plain_hugging_face_model(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    recipe = Recipe(mutants_per_family=3, hidden_size=32, layers=1, heads=2, intermediate_size=64, train_steps=12,
                    max_train_seconds=60, families=("plain_cnn",))
    target = ensure_embedded_model(root=tmp_path, recipe=recipe)
    assert target == model_dir(tmp_path, recipe) and target != model_dir(tmp_path, Recipe())
    manifest = json.loads((target / "manifest.json").read_text())
    assert manifest["task"] == "fill" and math.isfinite(manifest["final_loss"])
    assert manifest["sampled_validity"]["sampled"] == 26
    assert len((target / REPLAY_FILE).read_text().splitlines()) == manifest["examples"] >= 2  # the seed, twice
    assert [p.name for p in tmp_path.iterdir()] == [target.name]  # no half-written folder left beside it

    built = (target / "manifest.json").stat().st_mtime_ns
    assert ensure_embedded_model(root=tmp_path, recipe=recipe) == target
    assert (target / "manifest.json").stat().st_mtime_ns == built  # kept, not rebuilt

    tokenizer = AutoTokenizer.from_pretrained(target)
    model = AutoModelForCausalLM.from_pretrained(target)
    ids = tokenizer("class Net", return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert out.shape[1] > ids.shape[1]
