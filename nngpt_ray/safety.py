"""Static safety check: the first of several layers between generated code and the host.

It refuses, before any process starts, code that imports outside an allowlist, reaches for dynamic
execution (exec/eval/compile/__import__/open), walks the object graph through dunder attributes
(`().__class__.__mro__[1].__subclasses__()`), calls the torch/numpy APIs that read or write files or
load native code (`torch.save`, `torch.ops.load_library`, `np.load`), or patches library modules
(`torch.argmax = ...`). It is deliberately stricter than a network needs and cannot be complete on
its own (Python is too dynamic), which is why the sandbox process, the runtime audit hook and the
parent's own measurements stand behind it. See README, "What the sandbox covers".
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

ALLOWED_MODULES = frozenset({
    "torch", "torchvision", "numpy", "einops", "math", "cmath", "typing", "typing_extensions",
    "functools", "collections", "itertools", "numbers", "dataclasses", "enum", "abc", "copy",
    "operator", "random", "warnings", "re", "string", "statistics", "fractions", "decimal",
    "heapq", "bisect", "contextlib", "__future__",
})
# Sub-modules of allowed packages that reach files, processes, the network or native code.
DENIED_SUBMODULES = frozenset({
    "torch.utils.cpp_extension", "torch.hub", "torch.distributed", "torch.multiprocessing",
    "torch.utils.data.datapipes", "torch._dynamo", "torch._inductor", "torch.compiler", "torch.package",
    "torch.serialization", "torch.testing", "torch.utils.benchmark", "torch.utils.tensorboard",
    "torchvision.datasets", "torchvision.io", "numpy.ctypeslib", "numpy.distutils", "numpy.f2py",
    "numpy.testing",
})
DENIED_BUILTINS = frozenset({
    "exec", "eval", "compile", "__import__", "open", "input", "breakpoint", "globals", "locals",
    "vars", "memoryview", "exit", "quit", "help", "__builtins__", "__loader__", "__spec__",
})
REFLECTIVE_BUILTINS = frozenset({"getattr", "setattr", "delattr", "hasattr"})
DENIED_ATTRIBUTES = frozenset({
    # object-graph escapes
    "__class__", "__bases__", "__base__", "__mro__", "__subclasses__", "__globals__", "__builtins__",
    "__code__", "__closure__", "__dict__", "__getattribute__", "__reduce__", "__reduce_ex__",
    "__import__", "__loader__", "__spec__", "__self__", "__func__", "__module__", "__traceback__",
    "__setattr__", "__delattr__", "__defaults__", "__kwdefaults__", "__init_subclass__", "__wrapped__",
    "f_globals", "f_locals", "f_builtins", "f_back", "f_code", "gi_frame", "gi_code", "cr_frame",
    "ag_frame", "tb_frame", "tb_next", "co_code", "mro",
    # files, native code, processes, threads, compilers
    "save", "load", "loadtxt", "savetxt", "savez", "savez_compressed", "fromfile", "tofile", "memmap",
    "from_file", "load_library", "load_state_dict_from_url", "download_url_to_file", "hub", "_C",
    "cpp_extension", "system", "popen", "spawn", "compile", "set_num_threads",
    "set_num_interop_threads", "_dynamo", "_inductor",
    # contextlib's process-wide effects (its suppress/nullcontext/contextmanager are fine)
    "chdir", "redirect_stdout", "redirect_stderr",
})
_ALLOWED_DUNDERS = frozenset({"__init__", "__name__", "__doc__", "__len__", "__call__", "__getitem__",
                              "__iter__", "__next__", "__repr__"})


@dataclass(frozen=True)
class Finding:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


def check_safety(tree: ast.Module) -> list[Finding]:
    """Every reason to refuse this module, in source order; empty when it may run."""
    checker = _SafetyVisitor()
    checker.visit(tree)
    return sorted(checker.findings, key=lambda f: f.line)


def safety_diagnostic(findings: list[Finding]) -> str:
    listed = "\n".join(f"- {f}" for f in findings[:10])
    allowed = ", ".join(sorted(m for m in ALLOWED_MODULES if not m.startswith("_")))
    return (f"The code was refused by the safety check:\n{listed}\n"
            f"Networks may import only: {allowed}; no file, process, network or dynamic-code access.")


class _SafetyVisitor(ast.NodeVisitor):
    def __init__(self) -> None:
        self.findings: list[Finding] = []
        self.module_aliases: set[str] = set()

    def _refuse(self, node: ast.AST, message: str) -> None:
        self.findings.append(Finding(getattr(node, "lineno", 0), message))

    def _check_module(self, node: ast.AST, name: str) -> None:
        root = name.split(".")[0]
        if root not in ALLOWED_MODULES:
            self._refuse(node, f"import of '{name}' is not allowed")
        elif any(name == d or name.startswith(d + ".") for d in DENIED_SUBMODULES):
            self._refuse(node, f"import of '{name}' is not allowed (files, processes or native code)")

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._check_module(node, alias.name)
            self.module_aliases.add(alias.asname or alias.name.split(".")[0])

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            self._refuse(node, "relative imports are not allowed")
            return
        module = node.module or ""
        self._check_module(node, module)
        for alias in node.names:
            if alias.name == "*":
                self._refuse(node, f"'from {module} import *' is not allowed")
                continue
            self._check_module(node, f"{module}.{alias.name}")
            self._check_attribute_name(node, alias.name)
            self.module_aliases.add(alias.asname or alias.name)

    def visit_Name(self, node: ast.Name) -> None:
        if node.id in DENIED_BUILTINS:
            self._refuse(node, f"use of '{node.id}' is not allowed")
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        self._check_attribute_name(node, node.attr)
        if isinstance(node.ctx, (ast.Store, ast.Del)) and _root_name(node) in self.module_aliases:
            self._refuse(node, f"patching module attribute '{ast.unparse(node)}' is not allowed")
        self.generic_visit(node)

    def _check_attribute_name(self, node: ast.AST, attr: str) -> None:
        if attr in DENIED_ATTRIBUTES or (attr.startswith("__") and attr.endswith("__") and attr not in _ALLOWED_DUNDERS):
            self._refuse(node, f"attribute '{attr}' is not allowed")

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Name) and func.id in REFLECTIVE_BUILTINS:
            target = node.args[0] if node.args else None
            name = node.args[1] if len(node.args) > 1 else None
            on_self = isinstance(target, ast.Name) and target.id == "self"
            if isinstance(name, ast.Constant) and isinstance(name.value, str):
                self._check_attribute_name(node, name.value)
            elif not on_self:
                self._refuse(node, f"{func.id}() with a computed attribute name is only allowed on self")
        self.generic_visit(node)

    def visit_Global(self, node: ast.Global) -> None:
        self._refuse(node, "'global' statements are not allowed")


def _root_name(node: ast.AST) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        node = node.value if not isinstance(node, ast.Call) else node.func
    return node.id if isinstance(node, ast.Name) else None
