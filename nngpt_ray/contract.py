"""The network module contract (LEMUR's), checked on the syntax tree before anything runs.

A module must define `supported_hyperparameters()` and `class Net(nn.Module)` with
`__init__(self, in_shape, out_shape, prm, device)`, `train_setup(self, prm)`, `learn(self, train_data)`
and `forward(self, x)`. `in_shape` is (batch, channels, height, width); `out_shape` is (classes,).
The check is static so that a broken completion costs milliseconds, not a process start, and its
diagnostic is written to be pasted back into a prompt.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

INIT_PARAMS = ("self", "in_shape", "out_shape", "prm", "device")
CONTRACT_TEXT = (
    "A network module defines `supported_hyperparameters()` returning a set of names such as "
    "{'lr', 'momentum'}, and `class Net(nn.Module)` with `__init__(self, in_shape, out_shape, prm, device)` "
    "(in_shape = (batch, channels, height, width), out_shape = (num_classes,), prm = dict of hyperparameters), "
    "`train_setup(self, prm)` (creates self.criteria and self.optimizer), `learn(self, train_data)` "
    "(one epoch over a DataLoader of (inputs, labels)) and `forward(self, x)` returning (batch, num_classes) logits."
)

CONTRACT_SKELETON = """import torch
import torch.nn as nn

def supported_hyperparameters():
    return {'lr', 'momentum'}

class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):  # in_shape (batch, channels, height, width), out_shape (classes,)
        ...
    def train_setup(self, prm):  # sets self.criteria and self.optimizer
        ...
    def learn(self, train_data):  # one epoch over (inputs, labels) batches
        ...
    def forward(self, x):  # returns (batch, classes) logits
        ...
"""


@dataclass
class ContractReport:
    problems: list[str] = field(default_factory=list)
    declared: set[str] | None = None  # names from supported_hyperparameters(), if statically known

    @property
    def ok(self) -> bool:
        return not self.problems

    def diagnostic(self) -> str:
        listed = "\n".join(f"- {p}" for p in self.problems)
        return f"The network does not follow the module contract:\n{listed}\nIts shape:\n```python\n{CONTRACT_SKELETON}```"


def check_contract(tree: ast.Module) -> ContractReport:
    report = ContractReport()
    functions = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}

    shp = functions.get("supported_hyperparameters")
    if shp is None:
        report.problems.append("no module-level function supported_hyperparameters()")
    else:
        if _positional_names(shp.args):
            report.problems.append("supported_hyperparameters() must take no arguments")
        report.declared = _literal_names(shp)

    missing = undefined_names(tree)
    if missing:
        report.problems.append(f"uses names it never defines or imports: {', '.join(missing[:8])}")
    stray = out_of_scope_names(tree)
    if stray:
        report.problems.append(f"reads {', '.join(stray[:8])} where {'it is' if len(stray) == 1 else 'they are'} not "
                               f"defined (bound only inside another function, e.g. a constructor parameter: keep "
                               f"it as self.<name>)")
    net = classes.get("Net")
    if net is None:
        report.problems.append("no module-level class Net")
        return report
    methods = {n.name: n for n in net.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    init = methods.get("__init__")
    if init is None:
        report.problems.append("Net has no __init__(self, in_shape, out_shape, prm, device)")
    else:
        names = _positional_names(init.args)
        required = _required_count(init.args)
        if tuple(names[:5]) != INIT_PARAMS or required > 5:
            found = ", ".join(names) or "no arguments"
            report.problems.append(f"Net.__init__ must take (self, in_shape, out_shape, prm, device); it takes ({found})")
    for name, arity in (("train_setup", 2), ("learn", 2), ("forward", 2)):
        method = methods.get(name)
        if method is None:
            report.problems.append(f"Net has no method {name}()")
        elif len(_positional_names(method.args)) < arity and method.args.vararg is None:
            report.problems.append(f"Net.{name} must take self and one argument")
    return report


_MODULE_NAMES = frozenset({"__name__", "__file__", "__doc__", "__package__", "__spec__", "__loader__",
                           "__builtins__", "__annotations__"})


def undefined_names(tree: ast.Module) -> list[str]:
    """Names the module reads but binds nowhere (not imported, defined, assigned, a parameter, nor a
    builtin): a NameError waiting to happen, e.g. a fill that uses a helper of another family. Scope-blind
    on purpose (a binding anywhere counts), so it only reports names that cannot resolve; annotations are
    not looked at where they are not evaluated (variable annotations; a function's too under
    `from __future__ import annotations`), and a star import turns the check off."""
    import builtins

    bound: set[str] = set(dir(builtins)) | _MODULE_NAMES
    read: dict[str, int] = {}
    annotations: set[int] = set()
    postponed = any(isinstance(n, ast.ImportFrom) and n.module == "__future__"
                    and any(a.name == "annotations" for a in n.names) for n in tree.body)
    if _star_import(tree):
        return []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
            if not isinstance(node, ast.ClassDef) and postponed:  # else evaluated when the def runs
                annotations.update(id(n) for a in (*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs,
                                                   node.args.vararg, node.args.kwarg) if a is not None
                                   and a.annotation is not None for n in ast.walk(a.annotation))
                if node.returns is not None:
                    annotations.update(id(n) for n in ast.walk(node.returns))
        elif isinstance(node, ast.AnnAssign):
            annotations.update(id(n) for n in ast.walk(node.annotation))
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
        elif isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
            bound.add(node.name)
        elif isinstance(node, ast.MatchMapping) and node.rest:
            bound.add(node.rest)
        elif isinstance(node, ast.Name):
            if isinstance(node.ctx, ast.Load):
                if id(node) not in annotations:  # ast.walk is breadth-first: annotations are known by now
                    read.setdefault(node.id, node.lineno)
            else:
                bound.add(node.id)
    missing = [name for name in read if name not in bound]
    return sorted(missing, key=read.get)


def out_of_scope_names(tree: ast.Module) -> list[str]:
    """Names a function or class body looks up globally that the module binds only inside some other
    scope: a constructor's parameter or local read in `forward` (`in_shape`, `h`), the commonest NameError
    of small code models after undefined helpers. Python's own scope analysis (symtable) decides what is
    global where; annotations, which `from __future__ import annotations` leaves unevaluated, are not
    references. Names bound nowhere at all are `undefined_names`'; a star import turns this off too."""
    import builtins
    import symtable

    if _star_import(tree):
        return []
    try:
        top = symtable.symtable(ast.unparse(tree), "<network>", "exec")
    except (SyntaxError, ValueError):
        return []
    module_level = {s.get_name() for s in top.get_symbols() if s.is_assigned() or s.is_imported() or s.is_namespace()}
    inner_bound: set[str] = set()
    looked_up: list[str] = []
    tables = list(top.get_children())
    while tables:
        table = tables.pop()
        tables.extend(table.get_children())
        for symbol in table.get_symbols():
            if symbol.is_declared_global():
                if symbol.is_assigned():
                    module_level.add(symbol.get_name())
            elif symbol.is_parameter() or symbol.is_assigned() or symbol.is_imported():
                inner_bound.add(symbol.get_name())
            if symbol.is_global() and symbol.is_referenced():
                looked_up.append(symbol.get_name())
    return [name for name in dict.fromkeys(looked_up) if name in inner_bound and name not in module_level
            and not hasattr(builtins, name) and name not in _MODULE_NAMES]


def _star_import(tree: ast.Module) -> bool:
    """`from x import *` anywhere: the names it binds are unknown, so the name checks are off."""
    return any(isinstance(n, ast.ImportFrom) and any(a.name == "*" for a in n.names) for n in ast.walk(tree))


def _positional_names(args: ast.arguments) -> list[str]:
    return [a.arg for a in (*args.posonlyargs, *args.args)]


def _required_count(args: ast.arguments) -> int:
    return len(args.posonlyargs) + len(args.args) - len(args.defaults)


def _literal_names(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str] | None:
    """{'lr', 'momentum'} from `return {'lr', 'momentum'}` (set, list or tuple); None if not literal."""
    returns = [n for n in ast.walk(fn) if isinstance(n, ast.Return)]
    if len(returns) != 1 or not isinstance(returns[0].value, (ast.Set, ast.List, ast.Tuple)):
        return None
    names = set()
    for elt in returns[0].value.elts:
        if not (isinstance(elt, ast.Constant) and isinstance(elt.value, str)):
            return None
        names.add(elt.value)
    return names
