"""The tiny model the test loops generate with, kept in `tests/data/tiny-model/`.

It is a real small LM built by the bootstrap code path (`nngpt_ray.bootstrap.build`) with a test-sized
recipe: it learns the fill format over two seed families and their mutants. Building it takes about 90 s
on 2 CPU cores, which every test session used to spend; it is built once and kept instead. Its training
pairs are kept beside it (`replay.jsonl`), and `test_bootstrap.py` checks that they are still the ones
the current seeds and fill prompts give: when that test fails, rebuild it with

    .venv/bin/python tests/tiny_model.py

Loops that use it narrow `task.families` to the same two (`conftest.tiny_loop_settings`), so its fills
are mostly valid. Its loss levels off at ~0.1 after about 170 steps."""

from __future__ import annotations

from pathlib import Path

from nngpt_ray.bootstrap import Recipe, build

TINY_FAMILIES = ["plain_cnn", "vgg"]
TINY_RECIPE = Recipe(mutants_per_family=30, hidden_size=128, layers=3, intermediate_size=256, train_steps=200,
                     max_train_seconds=85, lr=3e-3, batch_size=8, families=tuple(TINY_FAMILIES))
TINY_MODEL = Path(__file__).parent / "data" / "tiny-model"


def main() -> None:
    build(TINY_MODEL, TINY_RECIPE, print)  # it builds beside the folder and replaces it only when done
    print(f"rebuilt {TINY_MODEL}")


if __name__ == "__main__":
    main()
