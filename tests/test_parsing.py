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
    # a helper of another network, never defined here: a NameError in the sandbox, caught before it
    (f"```python\n{CODE.replace('def forward(self, x):', 'def forward(self, x):' + chr(10) + '        x = vgg_block(x)')}```",
     FailureKind.CONTRACT, "uses names it never defines or imports: vgg_block"),
    # the constructor's parameter read in forward (bound in __init__, not where forward looks it up)
    (f"```python\n{CODE.replace('def forward(self, x):', 'def forward(self, x):' + chr(10) + '        x = x[:, : in_shape[1]]')}```",
     FailureKind.CONTRACT, "reads in_shape where it is not defined"),
    # an annotation is evaluated when its def runs (no `from __future__ import annotations`)
    (f"```python\n{CODE.replace('def forward(self, x):', 'def forward(self, x: Tensor):')}```",
     FailureKind.CONTRACT, "uses names it never defines or imports: Tensor"),
])
def test_refusals_carry_a_diagnostic(text, kind, words):
    with pytest.raises(ParseFailure) as info:
        parse_completion(text)
    assert info.value.kind == kind
    assert words in info.value.diagnostic
    if kind == FailureKind.CONTRACT:
        assert "class Net(nn.Module)" in info.value.diagnostic  # the contract itself, for the re-prompt


NEAR_MISS = '''Here is a network:
```python
import torch
import torch.nn as nn

def supported_hyperparameters():
    return {'lr': 0.01, 'momentum': 0.9, 'dropout': 0.2}

class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)
    def forward(self, x):
        return torch.relu(self.conv(x))

class ConvClassifier(nn.Module):
    def __init__(self, num_classes=10, in_channels=3, width=16):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, width, 3, padding=1)
        self.block = Block(width)
        self.head = nn.Linear(width, num_classes)
    def forward(self, x):
        x = self.block(self.stem(x))
        return self.head(x.mean((2, 3)))
```'''


def test_contract_near_misses_of_a_real_code_model_are_repaired(digits):
    """What Qwen2.5-Coder-0.5B writes: the network under its own name with its own constructor, a dict of
    defaults for supported_hyperparameters(), no training methods. Repaired, it builds and trains."""
    with pytest.raises(ParseFailure, match="no module-level class Net"):
        parse_completion(NEAR_MISS, repair=False)
    parsed = parse_completion(NEAR_MISS)
    assert parsed.declared == {"lr", "momentum", "dropout"}
    assert parsed.hyperparameters == {"lr": 0.01, "momentum": 0.9, "dropout": 0.2}
    assert any("renamed class ConvClassifier to Net" in r for r in parsed.repairs)
    assert "class Block(nn.Module)" in parsed.code  # the helper keeps its name
    from nngpt_ray.harness import evaluate
    from nngpt_ray.config import SandboxConfig
    from nngpt_ray.spec import CandidateSpec, Hyperparameters

    spec = CandidateSpec(code=parsed.code, hyperparameters=Hyperparameters(**parsed.hyperparameters, epochs=1))
    result = evaluate(spec, digits, SandboxConfig(timeout_s=120))
    assert result.failure is None, result.error
    assert result.best_accuracy > 0.1


@pytest.mark.parametrize("change, words", [
    # two network classes, neither used by the other: which one is meant is not clear
    (lambda t: t.replace("class Block(nn.Module)", "class Other(nn.Module)").replace("Block(width)", "nn.Identity()"),
     "no module-level class Net"),
    # a required constructor argument that maps to nothing we pass
    (lambda t: t.replace("(self, num_classes=10,", "(self, depth, num_classes=10,"), "Net.__init__ must take"),
])
def test_ambiguous_near_misses_are_left_to_the_diagnostic(change, words):
    with pytest.raises(ParseFailure) as info:
        parse_completion(change(NEAR_MISS))
    assert info.value.kind == FailureKind.CONTRACT and words in info.value.diagnostic
    assert "def __init__(self, in_shape, out_shape, prm, device)" in info.value.diagnostic  # the compact contract
