"""The tests' tiny model: a real small LM built by the bootstrap code path with a test-sized recipe. It
learns the fill format over two seed families and their mutants (about 90 s on 2 CPU cores; its loss
levels off at ~0.1 after about 170 steps).

    python tests/build_tiny_model.py TARGET_DIR      (conftest.tiny_build starts it with the session)
"""

import sys
from pathlib import Path

FAMILIES = ("plain_cnn", "vgg")

if __name__ == "__main__":
    from nngpt_ray.bootstrap import Recipe, build

    recipe = Recipe(mutants_per_family=30, hidden_size=128, layers=3, intermediate_size=256, train_steps=200,
                    max_train_seconds=85, lr=3e-3, batch_size=8, families=FAMILIES)
    build(Path(sys.argv[1]), recipe, print)
