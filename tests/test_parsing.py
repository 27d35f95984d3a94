"""Completion parsing: what is recovered, what is refused, and the diagnostic given back."""

from __future__ import annotations

import pytest

from conftest import DATA
from nngpt_ray.failures import FailureKind
from nngpt_ray.parsing import ParseFailure, parse_completion

CODE = (DATA / "lemur_convbn.py").read_text()


def test_fenced_code_and_json_hyperparameters():
    text = f"Here is a network.\n```python\n{CODE}```\nAnd its settings:\n```json\n{{\"lr\": 0.02, \"batch_size\": 32, \"momentum\": \"0.8\"}}\n```\n"
    parsed = parse_completion(text)
    assert "class Net" in parsed.code and "Here is" not in parsed.code
    assert parsed.hyperparameters == {"lr": 0.02, "batch": 32, "momentum": 0.8}
    assert parsed.declared == {"lr", "momentum"}


def test_yaml_hyperparameters_and_transform():
    text = f"```python\n{CODE}```\n```yaml\nlr: 0.1\nepochs: 3\ntransform:\n  resize: 16\n```"
    parsed = parse_completion(text)
    assert parsed.hyperparameters == {"lr": 0.1, "epochs": 3}
    assert parsed.transform == {"resize": 16}


def test_bare_code_with_prose_around_it():
    parsed = parse_completion(f"Sure! Below is the module.\n\n{CODE}\nThis network should work well.")
    body = CODE[CODE.index("import torch"):]
    assert parsed.code.strip() == body.strip()  # prose before and after dropped, code intact
    assert "removed text around the code" in parsed.repairs


def test_missing_imports_are_added():
    code = CODE.replace("import torch\nimport torch.nn as nn\n", "")
    parsed = parse_completion(f"```python\n{code}```")
    assert parsed.code.startswith("import torch\nimport torch.nn as nn\n")
    assert any("added import torch" in r for r in parsed.repairs)


def test_inline_hyperparameter_line():
    parsed = parse_completion(f"```python\n{CODE}```\nhyperparameters: {{\"lr\": 0.03, \"momentum\": 0.5}}")
    assert parsed.hyperparameters == {"lr": 0.03, "momentum": 0.5}


@pytest.mark.parametrize("text, kind, words", [
    ("I cannot help with that.", FailureKind.PARSE, "No Python code found"),
    (f"```python\n{CODE.replace('def forward(self, x):', 'def forward(self, x)')}```", FailureKind.SYNTAX, "line"),
    (f"```python\n{CODE.replace('def supported_hyperparameters', 'def hyperparameters')}```", FailureKind.CONTRACT,
     "supported_hyperparameters()"),
    (f"```python\n{CODE.replace('    def learn(self, train_data):', '    def fit(self, train_data):')}```",
     FailureKind.CONTRACT, "Net has no method learn()"),
    (f"```python\nimport os\n{CODE}```", FailureKind.UNSAFE, "import of 'os'"),
])
def test_refusals_carry_a_diagnostic(text, kind, words):
    with pytest.raises(ParseFailure) as info:
        parse_completion(text)
    assert info.value.kind == kind
    assert words in info.value.diagnostic
    if kind == FailureKind.CONTRACT:
        assert "class Net(nn.Module)" in info.value.diagnostic  # the contract itself, for the re-prompt
