"""The static safety check: the first layer in front of generated code."""

from __future__ import annotations

import ast

import pytest

from nngpt_ray.corpus import seed_entries
from nngpt_ray.safety import check_safety


def findings(code: str) -> list[str]:
    return [str(f) for f in check_safety(ast.parse(code))]


@pytest.mark.parametrize("seed", seed_entries(), ids=lambda s: s.name)
def test_seed_networks_pass(seed):
    assert findings(seed.code) == []


@pytest.mark.parametrize("code, words", [
    ("import subprocess", "import of 'subprocess'"),
    ("from os import system", "import of 'os"),
    ("import torch.utils.cpp_extension", "torch.utils.cpp_extension"),
    ("from torchvision.datasets import MNIST", "torchvision.datasets"),
    ("x = eval('1')", "'eval'"),
    ("f = open('/etc/passwd')", "'open'"),
    ("__import__('os')", "'__import__'"),
    ("y = ().__class__.__mro__[1].__subclasses__()", "'__class__'"),
    ("import torch\ntorch.save({}, '/tmp/x')", "'save'"),
    ("import torch\ntorch.ops.load_library('x.so')", "'load_library'"),
    ("import torch\ntorch.argmax = lambda *a, **k: 0", "patching module attribute"),
    ("import torch\ng = getattr(torch, 'sa' + 've')", "computed attribute name"),
    ("import torch\ng = getattr(torch, '_C')", "'_C'"),
    ("from .x import y", "relative imports"),
    ("from contextlib import chdir", "'chdir'"),
    ("import contextlib\ncontextlib.redirect_stdout(None)", "'redirect_stdout'"),
])
def test_refusals(code, words):
    found = findings(code)
    assert found and any(words in f for f in found), found


def test_contextlib_without_process_wide_effects_is_allowed():
    assert findings("from contextlib import suppress, nullcontext\nwith suppress(StopIteration):\n    pass\n") == []


def test_reflection_on_self_is_allowed():
    code = "class A:\n    def f(self, i):\n        setattr(self, f'layer{i}', 1)\n        return getattr(self, f'layer{i}')\n"
    assert findings(code) == []
