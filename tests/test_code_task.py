"""The whole-module `code` task: few-shot prompts from the corpus, parsing, the diagnostic re-prompt."""

from __future__ import annotations

import json
import random

import pytest

from conftest import DATA
from nngpt_ray.corpus import CorpusEntry, seed_entries
from nngpt_ray.datasets import dataset_info
from nngpt_ray.failures import FailureKind
from nngpt_ray.parsing import ParseFailure
from nngpt_ray.spec import Origin, Transform
from nngpt_ray.tasks.code import CodeTask

LEMUR = (DATA / "lemur_convbn.py").read_text()


def task(examples: int = 1) -> CodeTask:
    return CodeTask(dataset_info("digits"), 2, Transform(), examples=examples)


def test_prompt_shows_contract_dataset_and_scored_examples():
    pool = [CorpusEntry(name="best", code=LEMUR, hyperparameters={"lr": 0.05}, accuracy=0.931), *seed_entries()]
    prompt = task(examples=2).prompt(pool, random.Random(0))
    user = prompt.messages[-1]["content"]
    assert "digits, input 1x8x8, 10 classes" in user and "__init__(self, in_shape, out_shape, prm, device)" in user
    assert user.count("```python\n") == 2 and len(prompt.parents) == 2
    assert prompt.messages[0]["role"] == "system"


def test_answer_is_parsed_with_hyperparameters_and_transform():
    answer = f"Here you go:\n```python\n{LEMUR}```\n```json\n{json.dumps({'lr': 0.02, 'batch': 32, 'transform': {'resize': 16}})}\n```"
    spec = task().parse(task().prompt(seed_entries(), random.Random(0)), answer, Origin(task="code"))
    assert spec.hyperparameters.lr == 0.02 and spec.hyperparameters.batch == 32 and spec.hyperparameters.epochs == 2
    assert spec.transform.resize == 16 and spec.dataset == "digits"


def test_failed_answer_gets_one_reprompt_with_the_diagnostic():
    t = task()
    prompt = t.prompt(seed_entries(), random.Random(0))
    bad = f"```python\n{LEMUR.replace('def forward(self', 'def run(self')}```"
    with pytest.raises(ParseFailure) as info:
        t.parse(prompt, bad, Origin(task="code"))
    assert info.value.kind == FailureKind.CONTRACT
    retry = t.reprompt(prompt, bad, info.value.diagnostic)
    assert [m["role"] for m in retry.messages] == ["system", "user", "assistant", "user"]
    assert "Net has no method forward()" in retry.messages[-1]["content"] and retry.id != prompt.id
    assert "def forward(self, x):" in retry.messages[-1]["content"]  # the contract's shape, compactly


def test_sft_example_round_trips():
    t = task()
    prompt = t.prompt(seed_entries(), random.Random(0))
    spec = t.parse(prompt, f"```python\n{LEMUR}```\n```json\n{{\"lr\": 0.03}}\n```", Origin(task="code"))
    payload, completion = t.example(prompt, spec)
    again = t.parse(prompt, completion, Origin(task="code"))
    assert again.code_hash == spec.code_hash and again.hyperparameters == spec.hyperparameters
    assert payload["messages"] == list(prompt.messages)


def test_helpers_of_the_example_network_used_by_name_are_copied_in(digits):
    """Half of Qwen2.5-Coder-0.5B's completions wrote a new Net around the example's helper (here
    squeezenet's Fire) without its definition: the helper is copied from the prompt's example, and the
    network builds and trains."""
    squeezenet = seed_entries(["squeezenet"])
    t = task()
    prompt = t.prompt(squeezenet, random.Random(0))
    answer = '''```python
import torch
import torch.nn as nn

def supported_hyperparameters():
    return {'lr', 'momentum'}

class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.device = device
        self.features = nn.Sequential(nn.Conv2d(in_shape[1], 32, 3, padding=1), nn.ReLU(), Fire(32, 8, 16),
                                      Fire(32, 8, 16))
        self.head = nn.Linear(32, out_shape[0])

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))

    def train_setup(self, prm):
        self.criteria = nn.CrossEntropyLoss()
        self.optimizer = torch.optim.SGD(self.parameters(), lr=prm['lr'], momentum=prm['momentum'])

    def learn(self, train_data):
        for inputs, labels in train_data:
            self.optimizer.zero_grad()
            self.criteria(self(inputs), labels).backward()
            self.optimizer.step()
```'''
    with pytest.raises(ParseFailure, match="never defines or imports: Fire"):
        t.parse(prompt, answer, Origin(task="code"), repair=False)
    spec = t.parse(prompt, answer, Origin(task="code"))
    assert spec.code.index("class Fire(nn.Module)") < spec.code.index("class Net(nn.Module)")
    assert spec.code.count("class Net(") == 1  # the example's own Net is never copied
    from nngpt_ray.config import SandboxConfig
    from nngpt_ray.harness import evaluate

    result = evaluate(spec.model_copy(update={"hyperparameters": spec.hyperparameters.model_copy(
        update={"epochs": 1})}), digits, SandboxConfig(timeout_s=120))
    assert result.failure is None and result.best_accuracy > 0.1, result.error
