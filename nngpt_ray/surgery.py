"""Code surgery on network modules with libcst: the fill region, and mutations inside it.

The *fill region* of a module is the body of `Net.__init__` after `super().__init__()`: the layer
definitions. The `fill` task masks it; a completion supplies it back. Finding it needs only line
numbers (the standard `ast`); changing it (used to make the embedded model's training data) edits
only that region, with libcst where the edit is structural: widths changed consistently, blocks
repeated or dropped, activations and pooling swapped. Every other byte of the file stays as it was,
so a mutated network differs from its parent exactly where the mutation says.
"""

from __future__ import annotations

import ast
import random
import re
from dataclasses import dataclass

import libcst as cst

from nngpt_ray.source import parse_tree

INDENT = " " * 8
MASK = f"{INDENT}<FILL>\n"
_ACTIVATIONS = ("ReLU", "GELU", "SiLU", "ReLU6", "LeakyReLU", "ELU", "Hardswish", "Mish")
_POOLS = ("MaxPool2d", "AvgPool2d")
_WIDTHS = (8, 12, 16, 24, 32, 40, 48, 64, 80, 96, 112, 128, 160, 192, 256)


class NoFillRegion(ValueError):
    pass


@dataclass(frozen=True)
class Split:
    """A module cut around its fill region; `before + region + after` is the original text."""

    before: str
    region: str
    after: str

    def masked(self) -> str:
        return self.before + MASK + self.after

    def with_region(self, region: str) -> str:
        return self.before + normalize_region(region) + self.after


def split(code: str) -> Split:
    """Find the fill region. Raises NoFillRegion if the module has none (no Net.__init__ with super())."""
    try:
        tree = parse_tree(code)
    except SyntaxError as err:
        raise NoFillRegion(f"not valid Python: {err.msg}") from None
    init = next((f for c in tree.body if isinstance(c, ast.ClassDef) and c.name == "Net"
                 for f in c.body if isinstance(f, ast.FunctionDef) and f.name == "__init__"), None)
    statements = init.body if init else []
    start = next((i for i, st in enumerate(statements) if _is_super_init(st)), None)
    if start is None or start + 1 >= len(statements):
        raise NoFillRegion("Net.__init__ has no statements after super().__init__()")
    lines = code.splitlines(keepends=True)
    begin, end = statements[start + 1].lineno - 1, statements[-1].end_lineno
    return Split("".join(lines[:begin]), "".join(lines[begin:end]), "".join(lines[end:]))


def normalize_region(region: str) -> str:
    """Re-indent a region to the body of Net.__init__ (8 spaces) and end it with a newline."""
    lines = [line.rstrip() for line in region.strip("\n").splitlines()]
    lines = [line for line in lines if line.strip()]
    if not lines:
        return ""
    strip = min(len(line) - len(line.lstrip()) for line in lines)
    base = len(lines[0]) - len(lines[0].lstrip())
    strip = min(strip, base)
    return "".join(INDENT + line[strip:] + "\n" for line in lines)


def _is_super_init(statement: ast.stmt) -> bool:
    call = statement.value if isinstance(statement, ast.Expr) else None
    return (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "__init__"
            and isinstance(call.func.value, ast.Call) and getattr(call.func.value.func, "id", None) == "super")


# ---------------------------------------------------------------- mutations

def mutate(code: str, rng: random.Random, steps: int = 2) -> str:
    """Apply `steps` random mutations to the fill region of `code`; the rest stays byte-identical."""
    parts = split(code)
    return parts.before + mutate_region(parts.region, rng, steps) + parts.after


def mutate_region(region: str, rng: random.Random, steps: int = 2) -> str:
    for _ in range(steps):
        mutation = rng.choice((_mutate_width, _mutate_width, _mutate_sequence, _swap_names, _mutate_small_int))
        region = mutation(region, rng)
    return region


def _mutate_width(region: str, rng: random.Random) -> str:
    """Change every occurrence of one width, so producer and consumer layers stay consistent."""
    values = sorted({int(v) for v in re.findall(r"(?<![\w.])(\d+)(?![\w.])", region) if int(v) >= 8})
    if not values:
        return region
    old = rng.choice(values)
    near = [w for w in _WIDTHS if w != old and old / 2.5 <= w <= old * 2.5]
    if not near:
        return region
    new = rng.choice(near)
    return re.sub(rf"(?<![\w.]){old}(?![\w.])", str(new), region)


def _mutate_small_int(region: str, rng: random.Random) -> str:
    """Nudge one small integer (a depth, a group count, a kernel) by one, at one place."""
    spots = [m for m in re.finditer(r"(?<![\w.])([2-7])(?![\w.])", region)]
    if not spots:
        return region
    m = rng.choice(spots)
    value = int(m.group(1)) + rng.choice((-1, 1))
    return region[:m.start()] + str(max(1, value)) + region[m.end():]


def _swap_names(region: str, rng: random.Random) -> str:
    for group in (_ACTIVATIONS, _POOLS):
        present = [n for n in group if re.search(rf"\bnn\.{n}\(", region)]
        if present and rng.random() < 0.7:
            old = rng.choice(present)
            new = rng.choice([n for n in group if n != old])
            return re.sub(rf"\bnn\.{old}\(", f"nn.{new}(", region)
    return region


class _SequenceEdit(cst.CSTTransformer):
    """Duplicate or delete one argument of one call with two or more arguments (nn.Sequential and alike)."""

    def __init__(self, rng: random.Random, target: int, action: str) -> None:
        self.rng, self.target, self.action, self.seen = rng, target, action, 0

    def leave_Call(self, original: cst.Call, updated: cst.Call) -> cst.Call:
        if not _is_sequence_call(updated):
            return updated
        self.seen += 1
        if self.seen - 1 != self.target:
            return updated
        args = list(updated.args)
        i = self.rng.randrange(len(args))
        if self.action == "duplicate":
            args.insert(i, args[i].with_changes(comma=cst.MaybeSentinel.DEFAULT))
        elif len(args) > 2:
            del args[i]
        args = [a.with_changes(comma=cst.MaybeSentinel.DEFAULT) for a in args[:-1]] + [
            args[-1].with_changes(comma=cst.MaybeSentinel.DEFAULT)]
        return updated.with_changes(args=args)


def _is_sequence_call(call: cst.Call) -> bool:
    name = cst.Module([]).code_for_node(call.func)
    return name.endswith("Sequential") and len(call.args) >= 2 and all(a.keyword is None and a.star == "" for a in call.args)


def _mutate_sequence(region: str, rng: random.Random) -> str:
    try:
        module = cst.parse_module(_dedent(region))
    except cst.ParserSyntaxError:
        return region
    count = sum(1 for _ in _iter_sequence_calls(module))
    if not count:
        return region
    edited = module.visit(_SequenceEdit(rng, rng.randrange(count), rng.choice(("duplicate", "delete"))))
    return normalize_region(edited.code)


def _iter_sequence_calls(module: cst.Module):
    found = []

    class Finder(cst.CSTVisitor):
        def visit_Call(self, node: cst.Call) -> None:
            if _is_sequence_call(node):
                found.append(node)

    module.visit(Finder())
    return found


def _dedent(region: str) -> str:
    return "".join(line[len(INDENT):] if line.startswith(INDENT) else line.lstrip() for line in region.splitlines(True))
