"""From an LLM completion to checked network code plus hyperparameters.

LLMs wrap code in prose, forget imports, and put hyperparameters in JSON, YAML or a sentence. This
module takes what is recoverable (fenced or bare code, a JSON/YAML hyperparameter block, missing
`torch`/`nn`/`F`/`math` imports, the contract near-misses of `repairs.py`), refuses the rest with a classified `ParseFailure` whose diagnostic is
written for one re-prompt, and never executes anything.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from nngpt_ray.contract import check_contract
from nngpt_ray.failures import FailureKind
from nngpt_ray.repairs import repair as near_miss_repair
from nngpt_ray.safety import check_safety, safety_diagnostic
from nngpt_ray.source import parse_tree

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)
_CODE_START = re.compile(r"^(import |from |class |def |@)")
_HP_ALIASES = {"learning_rate": "lr", "batch_size": "batch", "epoch": "epochs", "n_epochs": "epochs"}
_KNOWN_IMPORTS = {
    "torch": "import torch",
    "nn": "import torch.nn as nn",
    "F": "import torch.nn.functional as F",
    "math": "import math",
}
_NUMBER = re.compile(r"^-?\d+(\.\d*)?([eE]-?\d+)?$")


@dataclass
class Parsed:
    code: str
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    transform: dict[str, Any] | None = None
    repairs: list[str] = field(default_factory=list)
    declared: set[str] | None = None


class ParseFailure(Exception):
    def __init__(self, kind: FailureKind, diagnostic: str) -> None:
        super().__init__(diagnostic)
        self.kind = kind
        self.diagnostic = diagnostic


def parse_completion(text: str, repair: bool = True, sources: tuple[str, ...] = ()) -> Parsed:
    """Extract and check code from `text` (`sources`: the networks its prompt showed). Raises ParseFailure
    (parse, syntax, contract or unsafe)."""
    code, hp_text, repairs = _split_code_and_hyperparameters(text)
    hyperparameters, transform = _parse_hyperparameters(hp_text) if hp_text else ({}, None)
    return check_code(code, hyperparameters, transform, repairs, repair=repair, sources=sources)


def check_code(code: str, hyperparameters: dict[str, Any] | None = None, transform: dict | None = None,
               repairs: list[str] | None = None, static_safety: bool = True, repair: bool = False,
               sources: tuple[str, ...] = ()) -> Parsed:
    """Repair imports (and, with `repair`, the contract's unambiguous near-misses: `repairs.py`; only for
    LLM completions, never for a file a user gives or code about to run), then check syntax, contract
    and safety. Raises ParseFailure."""
    repairs = list(repairs or [])
    code, added = _add_missing_imports(code)
    if added:
        repairs.append("added " + "; ".join(added))
    try:
        tree = parse_tree(code)
    except SyntaxError as err:
        line = (err.text or "").rstrip()
        where = f"line {err.lineno}: {line.strip()}" if err.lineno else "unknown line"
        raise ParseFailure(FailureKind.SYNTAX, f"SyntaxError: {err.msg} at {where}") from None
    report = check_contract(tree)
    if not report.ok and repair:
        repaired = near_miss_repair(code, sources)
        if repaired.notes:
            code, added = _add_missing_imports(repaired.code)  # a copied helper may use F or math
            if added:
                repaired.notes.append("added " + "; ".join(added))
            tree = parse_tree(code)
            report = check_contract(tree)
            repairs += repaired.notes
            hyperparameters = repaired.defaults | dict(hyperparameters or {})
    if not report.ok:
        raise ParseFailure(FailureKind.CONTRACT, report.diagnostic())
    if static_safety and (findings := check_safety(tree)):
        raise ParseFailure(FailureKind.UNSAFE, safety_diagnostic(findings))
    return Parsed(code=code, hyperparameters=dict(hyperparameters or {}), transform=transform,
                  repairs=repairs, declared=report.declared)


def _split_code_and_hyperparameters(text: str) -> tuple[str, str | None, list[str]]:
    repairs: list[str] = []
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(text)]
    code_blocks = [b for lang, b in blocks if lang in ("", "python", "py", "python3") and _looks_like_code(b)]
    hp_blocks = [b for lang, b in blocks if lang in ("json", "yaml", "yml")]
    if code_blocks:
        code = next((b for b in code_blocks if "class Net" in b), code_blocks[0])
        if len(text.strip()) > len(code.strip()) + 8:
            repairs.append("took the code out of its fenced block")
    else:
        code = _bare_code(text)
        if code is None:
            raise ParseFailure(FailureKind.PARSE, "No Python code found. Answer with one ```python block "
                                                  "holding the whole module, then a ```json block of hyperparameters.")
        if code.strip() != text.strip():
            repairs.append("removed text around the code")
    hp_text = hp_blocks[0] if hp_blocks else _inline_hyperparameters(text)
    return code.strip("\n") + "\n", hp_text, repairs


def _looks_like_code(block: str) -> bool:
    return any(_CODE_START.match(line) for line in block.splitlines())


def _bare_code(text: str) -> str | None:
    """Code written without fences: from the first code-looking line, trimming trailing prose."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if _CODE_START.match(line)), None)
    if start is None:
        return None
    body = lines[start:]
    for end in range(len(body), max(0, len(body) - 20), -1):
        candidate = "\n".join(body[:end])
        try:
            parse_tree(candidate)
            return candidate
        except SyntaxError:
            continue
    return "\n".join(body)


def _inline_hyperparameters(text: str) -> str | None:
    """A `hyperparameters: {...}` line or a trailing JSON object outside any fence."""
    outside = _FENCE.sub("", text)
    match = re.search(r"(?im)^\s*(?:#+\s*)?(?:hyperparameters|hparams|prm)\s*[:=]\s*(\{.*\})\s*$", outside)
    if match:
        return match.group(1)
    match = re.search(r"(\{[^{}]*\"lr\"[^{}]*\})", outside)
    return match.group(1) if match else None


def _parse_hyperparameters(block: str) -> tuple[dict[str, Any], dict | None]:
    data: Any = None
    try:
        data = json.loads(block)
    except json.JSONDecodeError:
        try:
            data = yaml.safe_load(block)
        except yaml.YAMLError:
            data = None
    if not isinstance(data, dict):
        return {}, None
    data = data.get("hyperparameters", data) if isinstance(data.get("hyperparameters"), dict) else data
    transform = data.pop("transform", None)
    out: dict[str, Any] = {}
    for key, value in data.items():
        key = _HP_ALIASES.get(str(key).strip().lower(), str(key).strip())
        if isinstance(value, str) and _NUMBER.match(value.strip()):
            value = float(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = value
    if "batch" in out:
        out["batch"] = int(out["batch"])
    if "epochs" in out:
        out["epochs"] = int(out["epochs"])
    return out, transform if isinstance(transform, dict) else None


def _add_missing_imports(code: str) -> tuple[str, list[str]]:
    try:
        tree = parse_tree(code)
    except SyntaxError:
        return code, []
    bound: set[str] = set()
    used: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
            bound.add(node.name)
        elif isinstance(node, ast.Name):
            (used if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
    added = [stmt for name, stmt in _KNOWN_IMPORTS.items() if name in used and name not in bound]
    if not added:
        return code, []
    return "\n".join(added) + "\n" + code, added
