"""NN-RAG: standalone, scope-closed building blocks from installed vision libraries.

Every `nn.Module` subclass a source package defines is a *target*. For each, libcst's scope analysis
finds the module-level names its statement reads (annotations aside: blocks start with
`from __future__ import annotations`); names defined in the same package are copied in, transitively
and in dependency order (renamed where two different definitions share a name), `pkg_module.name`
chains through module aliases become direct references, and imports of torch, numpy and the standard
library a network may use stay imports. PIL becomes a stand-in (STAND_INS), torchvision's compiled ops
plain PyTorch or a classified failure when called (STUBS), constants read from `sys` and `platform` a
frozen class (FROZEN). A name that leads anywhere else (another library, a star import) makes the target
fail with a classified reason. What comes out is one file per block that imports nothing of the source
package.

Each block is then validated like any untrusted code, in a throwaway confined process in which the
source packages cannot be imported (`sandbox/blockcheck.py`): it imports, it instantiates, and one
forward pass runs. Constructor arguments and inputs come first from the package's own use of the class
(`rag_usage.observe`: its model builders run on the meta device; what they pass along is copied into the
block), then from guesses from the signature with dummy inputs.
The block store (`blocks.sqlite` + `blocks/*.py`) records every target, its outcome and a MinHash.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import multiprocessing
import os
import shutil
import sqlite3
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import libcst as cst
from libcst.metadata import FunctionScope, GlobalScope, MetadataWrapper, ParentNodeProvider, ScopeProvider

from nngpt_ray import rag_usage
from nngpt_ray.failures import UserError
from nngpt_ray.mutants import in_parallel
from nngpt_ray.repairs import dotted
from nngpt_ray.safety import ALLOWED_MODULES

SOURCES = ("torchvision", "timm")
BLOCKCHECK = Path(__file__).parent / "sandbox" / "blockcheck.py"
# Definitions replaced by a stand-in with the same effect on computation: torchvision's API-usage
# logging (a call into torch's C++ telemetry, and it needs `types`, which networks may not import).
# torchvision's compiled ops: `_has_ops()` answers False, so the ops that have a pure-PyTorch path
# (roi_align) take it; `nms` gets one here; the others raise NATIVE_OP (classified `native_op`) when called.
NATIVE_OP = "needs torchvision's compiled ops"
STUBS = {
    "torchvision.utils._log_api_usage_once": "def NAME(obj):\n    pass  # torchvision's API-usage logging",
    "torchvision.extension._has_ops": "def NAME():\n    return False  # this block runs without torchvision's compiled ops",
    "torchvision.extension._assert_has_ops":
        f"def NAME():\n    raise NotImplementedError(\"{NATIVE_OP} (not available in a standalone block)\")",
    "torchvision.ops.boxes.nms": '''def NAME(boxes, scores, iou_threshold):
    """Non-maximum suppression in plain PyTorch (torchvision's is a compiled op): the indices of the boxes
    kept, by decreasing score."""
    order = scores.argsort(descending=True)
    keep = []
    while order.numel() > 0:
        i = order[0]
        keep.append(i)
        if order.numel() == 1:
            break
        rest = order[1:]
        top_left = torch.maximum(boxes[i, :2], boxes[rest, :2])
        bottom_right = torch.minimum(boxes[i, 2:], boxes[rest, 2:])
        inter = (bottom_right - top_left).clamp(min=0).prod(dim=1)
        area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
        iou = inter / (area(boxes[i]) + area(boxes[rest]) - inter)
        order = rest[iou <= iou_threshold]
    return torch.stack(keep) if keep else torch.zeros(0, dtype=torch.int64, device=boxes.device)''',
}
# Standard-library modules a block may not import, of which code reads only constants: a class with those
# attributes, frozen at extraction (sys.byteorder picks a PIL mode; platform.machine() a resize path).
FROZEN = {"sys": {"byteorder": repr(sys.byteorder)},
          "platform": {"machine": f"staticmethod(lambda: {__import__('platform').machine()!r})"}}
# Optional image libraries a block cannot import. Their names become a stand-in class: nothing is an
# instance of it, calling or instantiating anything of it raises. The tensor code paths run (validation proves
# it); the PIL-image paths are cut. Blocks that use one say so (`stand_ins` in the store and the summary).
STAND_INS = frozenset({"PIL", "accimage"})
UNAVAILABLE = '''class _Unavailable(type):
    """Stand-in for a library this block cannot import: a class nothing is an instance of; using it raises."""

    def __getattr__(cls, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Unavailable(f"{cls.__name__}.{attr}", (), {})

    def __call__(cls, *args, **kwargs):
        raise ModuleNotFoundError(f"{cls.__name__} is not available in this block")'''
# What a block may import: torch, numpy and the standard library modules networks may use.
BLOCK_IMPORTS = frozenset(ALLOWED_MODULES - {"torchvision", "einops"})


@dataclass(frozen=True)
class Extracted:
    code: str
    stand_ins: list[str]  # foreign libraries replaced by a stand-in (see STAND_INS)
    names: dict[str, str] = field(default_factory=dict)  # "module:Name" asked for in `also` -> its name in the block


class ExtractionFailure(Exception):
    """A target whose closure cannot be made standalone. `kind` is one of EXTRACTION_KINDS."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind, self.detail = kind, detail


EXTRACTION_KINDS = ("no_source", "foreign_import", "local_import", "native_op", "unresolved_name", "module_object")
VALIDATION_KINDS = ("import", "instantiate", "forward", "timeout", "crashed")


# ---------------------------------------------------------------- reading one source module

@dataclass
class _Module:
    """One parsed source module: its top-level statements and what each reads."""

    name: str
    package: str
    wrapper: MetadataWrapper
    body: list[cst.BaseStatement]
    binders: dict[str, list[int]]  # global name -> indices of top-level statements binding it
    imports: set[str]  # global names bound by an import
    reads: list[list[tuple]]  # per statement, needed when it runs: ("name", N) or ("attr", module, attribute)
    lazy: list[list[tuple]]  # per statement, needed only when a function it defines is called
    local_imports: dict[int, str]  # statement -> a module it imports inside a function, that blocks may not
    local_froms: dict[int, list[tuple[str, str, str]]]  # id(ImportFrom in a function) -> (bound, module, name)
    global_names: dict[int, str]  # id(Name node) -> the global name it reads or binds
    chains: dict[int, tuple[str, str]]  # id(Attribute node) -> (module, attribute) through a module alias


class Extractor:
    """Closures of targets in one source package; parses each module once."""

    def __init__(self, package: str) -> None:
        self.package = package
        self._modules: dict[str, _Module] = {}
        self._rendered: dict[tuple[str, int], list[tuple[tuple, str]]] = {}

    # -- discovery
    def targets(self) -> tuple[list[tuple[str, str]], dict[str, str]]:
        """(module, class) of every nn.Module subclass defined in the package, and modules that failed to
        import (module -> reason). Importing the installed package here is trusted library code."""
        import torch

        modules, broken = rag_usage.package_modules(self.package)
        found = []
        for module in modules:
            for attr, value in sorted(vars(module).items()):
                if inspect.isclass(value) and issubclass(value, torch.nn.Module) \
                        and value.__module__ == module.__name__ and value.__qualname__ == attr:
                    found.append((module.__name__, attr))
        return found, broken

    # -- closure
    def extract(self, module: str, name: str, also: tuple[tuple[str, str], ...] = ()) -> Extracted:
        """The standalone source of `module.name`, with the definitions `also` names ((module, name): those
        its recorded construction passes it) copied in too. Raises ExtractionFailure."""
        order: list[tuple[str, int]] = []  # (module, statement index), dependencies first
        imports: dict[str, str] = {}  # name in the block -> its import line
        resolved: dict[tuple[str, str], str] = {}  # (module, global name) -> name in the block
        taken: dict[str, str] = {}  # name in the block -> what it stands for
        state: set[tuple[str, int]] = set()
        stubs: list[str] = []
        stand_ins: dict[str, str] = {}
        frozen: dict[str, str] = {}

        def claim(meaning: str, wanted: str, module_name: str) -> str:
            candidate, n = wanted, 1
            while taken.get(candidate, meaning) != meaning:
                suffix = module_name.rsplit(".", 1)[-1].lstrip("_")
                candidate = f"{wanted}_{suffix}" if n == 1 else f"{wanted}_{suffix}{n}"
                n += 1
            taken[candidate] = meaning
            return candidate

        def need(mod: str, global_name: str) -> str:
            """Make `global_name` of `mod` available in the block; returns its name there."""
            if (mod, global_name) in resolved:
                return resolved[(mod, global_name)]
            if f"{mod}.{global_name}" in STUBS:
                out = claim(f"{mod}.{global_name}", global_name, mod)
                stubs.append(STUBS[f"{mod}.{global_name}"].replace("NAME", out))
                if "torch." in stubs[-1]:
                    imports["torch"] = "import torch"
                resolved[(mod, global_name)] = out
                return out
            m = self._module(mod)
            if global_name in m.imports:
                resolved[(mod, global_name)] = out = need_import(m, global_name)
                return out
            statements = m.binders.get(global_name)
            if not statements:  # e.g. brought in by `from .x import *`: where the object says it lives
                value = _runtime_value(mod, global_name)
                home, own = getattr(value, "__module__", None), getattr(value, "__name__", None)
                if home and own and (home, own) != (mod, global_name) and home.startswith(self.package):
                    resolved[(mod, global_name)] = out = need(home, own)
                    return out
                raise ExtractionFailure("unresolved_name", f"{mod}.{global_name} is not defined at module level")
            for idx in statements:
                visit(mod, idx)
            return resolved[(mod, global_name)]

        def need_import(m: _Module, global_name: str) -> str:
            if "." in global_name:  # `import a.b`: binds `a`, and the code reads a.b.x
                root = global_name.split(".")[0]
                if root in STAND_INS:
                    return stand_in(root, root, m.name)
                if root not in BLOCK_IMPORTS:
                    raise ExtractionFailure("foreign_import", f"{m.name} imports {global_name}")
                imports[f"import {global_name}"] = f"import {global_name}"
                return global_name
            source, original = _import_source(m, global_name)
            root = source.split(".")[0]
            line = f"import {source}" if original is None else f"from {source} import {original}"
            if root in BLOCK_IMPORTS:
                alias = claim(line, global_name, m.name)
                bare = source if original is None else original
                imports[alias] = line if alias == bare else f"{line} as {alias}"
                return alias
            if root in STAND_INS:
                return stand_in(global_name, source if original is None else f"{source}.{original}", m.name)
            if original is not None and f"{source}.{original}" in STUBS:
                return need(source, original)
            if original is None and source in FROZEN:
                alias = claim(f"frozen {source}", global_name, m.name)
                frozen[alias] = "\n".join([f"class {alias}:", f'    """What this block reads of `{source}`, as it was '
                                           f'at extraction (a block may not import it)."""',
                                           *(f"    {k} = {v}" for k, v in FROZEN[source].items())])
                return alias
            if source.startswith(f"{self.package}.extension") or source.startswith(f"{self.package}._C"):
                raise ExtractionFailure("native_op", f"{m.name} needs {global_name} from {source} (compiled ops)")
            if root != self.package.split(".")[0]:
                raise ExtractionFailure("foreign_import", f"{m.name} needs {global_name} from {source}")
            if original is None or _is_module(f"{source}.{original}") and inspect.ismodule(_runtime_value(source, original)):
                raise ExtractionFailure("module_object", f"{m.name} uses the module {source}"
                                                         f"{'' if original is None else '.' + original} as a value")
            return need(source, original)

        def stand_in(global_name: str, what: str, module_name: str) -> str:
            alias = claim(f"stand-in {what}", global_name, module_name)
            stand_ins[alias] = f'{alias} = _Unavailable("{what}", (), {{}})'
            return alias

        def visit(mod: str, idx: int) -> None:
            if (mod, idx) in state:
                return  # done, or in progress (a cycle through function bodies: order does not matter)
            state.add((mod, idx))
            m = self._module(mod)
            if idx in m.local_imports:
                raise ExtractionFailure("local_import", f"{mod} imports {m.local_imports[idx]} inside a function")
            for bound in _bound_names(m, idx):
                resolved[(mod, bound)] = claim(f"{mod}.{bound}", bound, mod)
            for read in m.reads[idx]:  # what must exist before the statement runs comes before it
                need(*((mod, read[1]) if read[0] == "name" else read[1:]))
            order.append((mod, idx))
            for read in m.lazy[idx]:  # what its functions call may come after it
                need(*((mod, read[1]) if read[0] == "name" else read[1:]))

        target_name = need(module, name)
        names = {f"{mod}:{other}": need(mod, other) for mod, other in also}
        parts = [f'"""{module}.{name} as a standalone block (extracted by nngpt rag build)."""',
                 "from __future__ import annotations", ""]
        parts += sorted(set(imports.values()))
        if stand_ins:
            parts += ["", "", UNAVAILABLE, "", *sorted(stand_ins.values())]
        for stub in [*frozen.values(), *stubs]:
            parts += ["", "", stub]
        for mod, idx in order:
            parts += ["", "", self._render(mod, idx, resolved)]
        parts += ["", "", f"BLOCK = {target_name}", ""]
        return Extracted("\n".join(parts), sorted({v.split('"')[1].split(".")[0] for v in stand_ins.values()}), names)

    def _render(self, mod: str, idx: int, resolved: dict[tuple[str, str], str]) -> str:
        """One top-level statement of `mod` with every module-level name it reads or binds renamed to its
        name in the block, and `alias.attr` chains through package modules replaced by the definition.
        Cached: a statement renders the same wherever the names it consults are the same."""
        for consulted, code in self._rendered.get((mod, idx), []):
            if all(resolved.get(key) == value for key, value in consulted):
                return code
        seen = _Consulted(resolved)
        code = self._render_with(mod, idx, seen)
        self._rendered.setdefault((mod, idx), []).append((tuple(seen.asked.items()), code))
        return code

    def _render_with(self, mod: str, idx: int, resolved: dict[tuple[str, str], str]) -> str:
        m = self._module(mod)

        def renamed(node: cst.CSTNode, fallback: str) -> str:
            g = m.global_names.get(id(node))
            return resolved.get((mod, g), fallback) if g and "." not in g else fallback

        class Rename(cst.CSTTransformer):
            def leave_Name(self, original: cst.Name, updated: cst.Name) -> cst.BaseExpression:
                return updated.with_changes(value=renamed(original, updated.value))

            def leave_Attribute(self, original: cst.Attribute, updated: cst.Attribute) -> cst.BaseExpression:
                chain = m.chains.get(id(original))
                return cst.Name(resolved[chain]) if chain else updated

            def leave_ImportFrom(self, original: cst.ImportFrom, updated: cst.ImportFrom):
                names = m.local_froms.get(id(original))
                if names is None:
                    return updated
                if not names:
                    return cst.Pass()
                return cst.FlattenSentinel([cst.Assign(targets=[cst.AssignTarget(cst.Name(bound))],
                                                       value=cst.Name(resolved[(source, name)]))
                                            for bound, source, name in names])

            def leave_ClassDef(self, original: cst.ClassDef, updated: cst.ClassDef) -> cst.ClassDef:
                return updated.with_changes(name=cst.Name(renamed(original, updated.name.value)))

            def leave_FunctionDef(self, original: cst.FunctionDef, updated: cst.FunctionDef) -> cst.FunctionDef:
                return updated.with_changes(name=cst.Name(renamed(original, updated.name.value)))

        node = m.body[idx].visit(Rename())
        return m.wrapper.module.code_for_node(node).strip("\n")

    def parse(self, modules: Iterable[str]) -> None:
        """Parse these modules now (each once); one without Python source fails later, at its extraction."""
        for name in dict.fromkeys(modules):
            try:
                self._module(name)
            except ExtractionFailure:
                pass

    def _module(self, name: str) -> _Module:
        if name not in self._modules:
            self._modules[name] = _read_module(name)
        return self._modules[name]


class _Consulted(dict):
    """A read-only view of a name mapping that remembers what was looked up (and what it was)."""

    def __init__(self, names: dict) -> None:
        super().__init__()
        self.names, self.asked = names, {}

    def get(self, key, default=None):
        self.asked[key] = self.names.get(key)
        return self.names.get(key, default)

    def __getitem__(self, key):
        self.asked[key] = self.names.get(key)
        return self.names[key]


def _runtime_value(module: str, name: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return vars(importlib.import_module(module)).get(name)


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError, AttributeError):
        return False


def _import_source(m: _Module, global_name: str) -> tuple[str, str | None]:
    """Where an imported global comes from: (module, None) for `import module [as global_name]`,
    (absolute module, original name) for `from module import original [as global_name]`."""
    for idx in m.binders.get(global_name, []):
        for node in _walk(m.body[idx]):
            if isinstance(node, cst.ImportFrom) and not isinstance(node.names, cst.ImportStar):
                for alias in node.names:
                    bound = alias.asname.name.value if alias.asname else dotted(alias.name)
                    if bound == global_name:
                        return _absolute(m, node), dotted(alias.name)
            elif isinstance(node, cst.Import):
                for alias in node.names:
                    bound = alias.asname.name.value if alias.asname else dotted(alias.name)
                    if bound == global_name:
                        return dotted(alias.name), None
    raise ExtractionFailure("unresolved_name", f"{m.name}.{global_name}: no import binds it")


def _absolute(m: _Module, node: cst.ImportFrom) -> str:
    return _absolute_in(m.package, node)


def _absolute_in(package: str, node: cst.ImportFrom) -> str:
    level = len(node.relative)
    module = dotted(node.module) if node.module else ""
    if not level:
        return module
    base = package.split(".")
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, module] if module else base)


def _walk(node: cst.CSTNode) -> Iterator[cst.CSTNode]:
    yield node
    for child in node.children:
        yield from _walk(child)


def _bound_names(m: _Module, idx: int) -> list[str]:
    return [name for name, statements in m.binders.items() if idx in statements and name not in m.imports]


def _read_module(name: str) -> _Module:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        raise ExtractionFailure("no_source", f"{name} has no Python source")
    source = Path(spec.origin).read_text()
    package = name if spec.submodule_search_locations else name.rpartition(".")[0]
    wrapper = MetadataWrapper(cst.parse_module(source))
    scopes = wrapper.resolve(ScopeProvider)
    parents = wrapper.resolve(ParentNodeProvider)
    module = wrapper.module
    body = list(module.body)
    index = {id(s): i for i, s in enumerate(body)}

    def top(node: cst.CSTNode) -> int | None:
        while node is not None and id(node) not in index:
            node = parents.get(node)
        return index[id(node)] if node is not None else None

    binders: dict[str, list[int]] = {}
    imports: set[str] = set()
    reads: list[list[tuple]] = [[] for _ in body]
    lazy: list[list[tuple]] = [[] for _ in body]
    global_names: dict[int, str] = {}
    chains: dict[int, tuple[str, str]] = {}
    global_scope = scopes[module]
    module_aliases: dict[str, str] = {}
    root = name.split(".")[0]
    for assignment in global_scope.assignments:
        where = top(assignment.node)
        if where is None:
            continue
        if isinstance(body[where], cst.SimpleStatementLine) and any(
                isinstance(s, cst.ImportFrom) and s.module is not None and dotted(s.module) == "__future__"
                for s in body[where].body):
            continue
        binders.setdefault(assignment.name, [])
        if where not in binders[assignment.name]:
            binders[assignment.name].append(where)
        if type(assignment).__name__ == "ImportAssignment":
            imports.add(assignment.name)
            value = _runtime_value(name, assignment.name)
            if inspect.ismodule(value) and value.__name__.split(".")[0] == root:
                module_aliases[assignment.name] = value.__name__
        else:  # the Name of `x = ...`, or the ClassDef / FunctionDef itself
            global_names[id(assignment.node)] = assignment.name
    for assignment in global_scope.assignments:
        if assignment.name not in binders:
            continue
        for access in assignment.references:
            if access.is_annotation:  # not evaluated (blocks start with `from __future__ import annotations`);
                continue  # type hints elsewhere are (`__annotations__ = {...}`, `torch.jit.annotate(List[int], [])`)
            where = top(access.node)
            if where is None:
                continue
            global_names[id(access.node)] = assignment.name
            needs = lazy[where] if _in_function(access.scope) else reads[where]
            alias = module_aliases.get(assignment.name)
            if alias is None:
                if ("name", assignment.name) not in needs:
                    needs.append(("name", assignment.name))
                continue
            # `alias.attr[.attr]`: follow submodules to the definition
            node, module_name = access.node, alias
            while True:
                parent = parents.get(node)
                if not (isinstance(parent, cst.Attribute) and parent.value is node):
                    raise ExtractionFailure("module_object", f"{name} uses the module {module_name} as a value")
                attr = parent.attr.value
                if _is_module(f"{module_name}.{attr}"):
                    node, module_name = parent, f"{module_name}.{attr}"
                    continue
                chains[id(parent)] = (module_name, attr)
                if ("attr", module_name, attr) not in needs:
                    needs.append(("attr", module_name, attr))
                break
    local_imports: dict[int, str] = {}
    local_froms: dict[int, list[tuple[str, str, str]]] = {}
    for i, statement in enumerate(body):
        if isinstance(statement, cst.SimpleStatementLine):
            continue
        for node in _walk(statement):
            if isinstance(node, cst.ImportFrom) and not isinstance(node.names, cst.ImportStar):
                source = _absolute_in(package, node)
                if source.split(".")[0] in BLOCK_IMPORTS:
                    continue
                if source.split(".")[0] != root:
                    local_imports[i] = source
                    break
                # `from pkg.x import y` inside a function: y is copied in, the import becomes `y = <its name>`
                names = []
                for alias in node.names:
                    original = dotted(alias.name)
                    bound = alias.asname.name.value if alias.asname else original
                    if _is_module(f"{source}.{original}"):  # a module: its `bound.attr` uses become the definitions
                        function = _enclosing_function(node, parents)
                        for use in _walk(function):
                            if isinstance(use, cst.Attribute) and isinstance(use.value, cst.Name) \
                                    and use.value.value == bound:
                                chains[id(use)] = (f"{source}.{original}", use.attr.value)
                                if ("attr", *chains[id(use)]) not in lazy[i]:
                                    lazy[i].append(("attr", *chains[id(use)]))
                        continue
                    names.append((bound, source, original))
                    if ("attr", source, original) not in lazy[i]:
                        lazy[i].append(("attr", source, original))
                local_froms[id(node)] = names
            elif isinstance(node, cst.Import):
                source = next((dotted(a.name) for a in node.names
                               if dotted(a.name).split(".")[0] not in BLOCK_IMPORTS), None)
                if source:
                    local_imports[i] = source
                    break
    return _Module(name, package, wrapper, body, binders, imports, reads, lazy, local_imports, local_froms,
                   global_names, chains)


def _enclosing_function(node: cst.CSTNode, parents) -> cst.CSTNode:
    while not isinstance(node, cst.FunctionDef) and parents.get(node) is not None:
        node = parents[node]
    return node


def _in_function(scope) -> bool:
    """Whether code in `scope` runs only when a function is called (not when the module is executed)."""
    while scope is not None and not isinstance(scope, GlobalScope):
        if isinstance(scope, FunctionScope):
            return True
        scope = scope.parent
    return False


# ---------------------------------------------------------------- constructor arguments

_INT_WORDS = {"classes": 10, "kernel": 3, "stride": 1, "padding": 1, "dilation": 1, "groups": 1, "heads": 2,
              "layers": 2, "depth": 2, "blocks": 2, "patch": 4, "window": 4, "size": 8, "length": 16,
              "anchors": 3, "ratio": 4, "factor": 2, "levels": 2, "bins": 4}
_FLOAT_WORDS = ("prob", "drop", "rate", "eps", "momentum", "alpha", "scale", "p", "ratio", "std", "mean")


def constructor_tries(cls: type) -> list[dict]:
    """Constructor tries ({"kwargs": ...}), in order: the defaults when nothing is required, then values
    guessed from each required parameter's name and annotation, at widths 16, 8 and 32 (GroupNorm wants
    multiples of 32). Encoded as rag_usage encodes: {"ref": NAME, "kwargs": {...}} is a class of the block
    built with those arguments (a config object), {"ref": NAME} a block type to pass, {"torch": "nn.X"} a
    torch layer class."""
    params, passes_through = _required(cls)
    if params is None:
        return [{"kwargs": {}}]
    tries = [] if params else [{}]
    for width in (16, 8, 32):
        guess = {p.name: _guess(p, width, cls) for p in params}
        if all(v is not None for v in guess.values()):
            tries.append(guess)
            if passes_through:  # `**kwargs` handed on to a layer: the commonest argument it misses
                tries.append(guess | {"kernel_size": 3})
    return [{"kwargs": kwargs} for kwargs in tries or [{}]]


def _required(cls: type) -> tuple[list[inspect.Parameter] | None, bool]:
    """The required constructor parameters (following `*args, **kwargs` up the MRO), and whether the
    constructor also takes **kwargs."""
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        try:
            signature = list(inspect.signature(klass.__init__).parameters.values())[1:]
        except (TypeError, ValueError):
            return None, False
        params = [p for p in signature if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.default is p.empty]
        varargs = any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in signature)
        if params or not varargs:
            return params, any(p.kind == p.VAR_KEYWORD for p in signature)
    return None, False


def _annotation_class(text: str, owner: type) -> type | None:
    """A class of the owner's package named in an annotation (`InvertedResidualConfig`, `List[CNBlockConfig]`)."""
    import re as _re

    namespace = vars(sys.modules.get(owner.__module__, object))
    for word in _re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text):
        value = namespace.get(word)
        if inspect.isclass(value) and value.__module__.split(".")[0] == owner.__module__.split(".")[0]:
            return value
    return None


def _guess(param: inspect.Parameter, width: int, owner: type | None = None, depth: int = 0):
    name = param.name.lower()
    annotation = param.annotation
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", None) or str(annotation)
    text = str(text)
    if "bool" in text:
        return False
    if "dtype" in name or "dtype" in text:
        return {"dtype": "float32"}
    if name in ("transforms", "lambd"):  # a list of callables, or one: the identity
        identity = {"torch": "nn.Identity", "kwargs": {}}
        return identity if name == "lambd" else [identity]
    if "Callable" in text or "layer" in name and "num" not in name:
        if "norm" in name:
            return {"torch": "nn.BatchNorm2d"}
        return {"torch": "nn.ReLU"} if "activation" in name else None
    if "Type[" in text or "type[" in text:
        inner = text.split("[", 1)[1].rstrip("]").split("[")[-1].split(",")[0].split("|")[0].strip(" ]'\"")
        return {"ref": inner.rsplit(".", 1)[-1]}
    config = _annotation_class(text, owner) if owner is not None and depth == 0 else None
    if config is not None and not issubclass(config, _torch_module()):
        required, _ = _required(config)
        kwargs = {p.name: _guess(p, width, config, depth + 1) for p in required or []}
        if any(v is None for v in kwargs.values()):
            return None
        value = {"ref": config.__name__, "kwargs": kwargs}
        return [value, value] if any(s in text for s in ("List", "list", "Sequence")) else value
    if any(s in text for s in ("List", "list", "Sequence", "Tuple", "tuple")):
        return [2, 2] if any(w in name for w in ("layers", "depth", "blocks", "repeats")) else [width, width]
    if "float" in text or (text == "<class 'inspect._empty'>" and any(name == w or name.endswith("_" + w)
                                                                   for w in _FLOAT_WORDS)):
        return 0.1
    if "str" in text:
        return None
    for word, value in _INT_WORDS.items():
        if word in name:
            return value
    return width


def _torch_module() -> type:
    import torch

    return torch.nn.Module


# ---------------------------------------------------------------- the store and the build

SCHEMA = """
CREATE TABLE IF NOT EXISTS blocks (
    target TEXT PRIMARY KEY,      -- module.Class
    source TEXT NOT NULL,         -- the package (torchvision, timm)
    status TEXT NOT NULL,         -- valid | invalid
    stage TEXT NOT NULL,          -- extract | validate
    kind TEXT,                    -- failure kind, NULL when valid
    detail TEXT,
    file TEXT,                    -- blocks/<target>.py, when extracted
    lines INTEGER,
    init_kwargs TEXT,             -- JSON: the constructor try that worked ({"args", "kwargs"}, see rag_usage)
    input_shape TEXT,             -- JSON: the forward arguments it ran on (encoded tensors, lists ...)
    output_shape TEXT,
    parameters INTEGER,
    seconds REAL,                 -- how long its validation took
    stand_ins TEXT,               -- foreign libraries replaced by a stand-in (comma-separated), or NULL
    minhash BLOB                  -- datasketch MinHash values (uint64) over the block's code tokens
);
"""


@dataclass
class BuildSummary:
    targets: int = 0
    extracted: int = 0
    valid: int = 0
    valid_with_stand_ins: int = 0  # valid, with PIL (or another optional library) cut out
    missing: dict[str, str] = field(default_factory=dict)  # sources that are not installed -> why
    unimportable: dict[str, str] = field(default_factory=dict)  # modules of a source that do not import -> why
    by_source: dict[str, dict[str, int]] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> dict:
        return {"targets": self.targets, "extracted": self.extracted, "valid": self.valid,
                "rate": round(self.valid / self.targets, 4) if self.targets else 0.0,
                "valid_with_stand_ins": self.valid_with_stand_ins,
                "by_source": self.by_source, "failures": dict(sorted(self.failures.items())),
                "missing_sources": self.missing, "unimportable_modules": self.unimportable}


def build(sources: list[str], out: Path, *, match: str | None = None,
          on_progress: Callable[[int, int], None] | None = None,
          on_stage: Callable[[str], None] = lambda stage: None) -> BuildSummary:
    """Extract and validate every target of `sources` (those whose `module.Class` contains `match`, when
    given) into `out`: blocks.sqlite and blocks/<target>.py. A rebuild replaces the store."""
    unknown = [source for source in sources if source not in SOURCES]
    if unknown:
        raise UserError(f"unknown rag source {', '.join(map(repr, unknown))}; known: {', '.join(SOURCES)}")
    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out / "blocks", ignore_errors=True)  # a rebuild replaces the store and its files
    (out / "blocks").mkdir()
    summary = BuildSummary()
    rows: list[dict] = []
    for source in sources:
        if importlib.util.find_spec(source) is None:  # counted, and the other sources still build
            summary.missing[source] = f"not installed (pip install {source}, or the nngpt-ray[{source}] extra)"
            summary.by_source[source] = {"targets": 0, "extracted": 0, "valid": 0}
            continue
        extractor = Extractor(source)
        targets, broken = extractor.targets()
        summary.unimportable.update(broken)  # their classes cannot be targets: said, not dropped
        targets = [t for t in targets if match is None or match in f"{t[0]}.{t[1]}"]
        on_stage(f"{source}: recording how its model builders construct and call its modules (meta device)"
                 " while parsing them")
        wanted = {f"{module}.{name}" for module, name in targets} if match is not None else None
        usages = _observe_while(source, wanted, lambda: extractor.parse(m for m, _ in targets)) if targets else {}
        on_stage(f"{source}: extracting {len(targets)} targets")
        for module, name in targets:
            target = f"{module}.{name}"
            row = {"target": target, "source": source}
            try:
                extracted, recorded = _extract_with_usage(extractor, module, name, usages.get(target))
            except ExtractionFailure as failure:
                rows.append(row | {"status": "invalid", "stage": "extract", "kind": failure.kind,
                                   "detail": failure.detail[:500]})
                continue
            except Exception as err:  # a parser or resolver bug must not stop the build: classified, kept
                rows.append(row | {"status": "invalid", "stage": "extract", "kind": "unresolved_name",
                                   "detail": f"{type(err).__name__}: {err}"[:500]})
                continue
            cls = _runtime_value(module, name)
            path = out / "blocks" / f"{target}.py"
            path.write_text(extracted.code)
            rows.append(row | {"file": str(path.relative_to(out)), "lines": extracted.code.count("\n"),
                               "code": extracted.code, "stand_ins": ",".join(extracted.stand_ins) or None,
                               "tries": recorded + constructor_tries(cls)})
    checks = [r for r in rows if "code" in r]
    on_stage(f"validating {len(checks)} blocks in the sandbox")
    answers = validate([{"code": r["code"], "tries": r["tries"]} for r in checks], blocked=list(sources),
                       on_progress=on_progress)
    for row, answer in zip(checks, answers, strict=True):
        row.update(status="valid" if answer["ok"] else "invalid", stage="validate",
                   kind=None if answer["ok"] else answer["kind"], detail=answer.get("error"),
                   init_kwargs=json.dumps(answer.get("try")), input_shape=json.dumps(answer.get("input")),
                   output_shape=json.dumps(answer.get("output")), parameters=answer.get("params"),
                   seconds=answer.get("seconds"))
    (out / "blocks.sqlite").unlink(missing_ok=True)
    _save(out / "blocks.sqlite", rows)
    for row in rows:
        per = summary.by_source.setdefault(row["source"], {"targets": 0, "extracted": 0, "valid": 0})
        per["targets"] += 1
        summary.targets += 1
        if "code" in row:
            per["extracted"] += 1
            summary.extracted += 1
        if row["status"] == "valid":
            per["valid"] += 1
            summary.valid += 1
            summary.valid_with_stand_ins += bool(row.get("stand_ins"))
        else:
            summary.failures[row["kind"]] = summary.failures.get(row["kind"], 0) + 1
    return summary


def _observe_while(source: str, wanted: set[str] | None, work: Callable[[], None]) -> dict[str, rag_usage.Usage]:
    """`rag_usage.observe(source, wanted)` in a fresh process while `work` runs here: both take the better
    part of a minute on one core. Where that process cannot run or dies, it is observed here instead."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        recording = pool.submit(rag_usage.observe, source, wanted)
        work()
        try:
            return recording.result()
        except BrokenProcessPool:
            pass
    return rag_usage.observe(source, wanted)


def _extract_with_usage(extractor: Extractor, module: str, name: str,
                        usage: rag_usage.Usage | None) -> tuple[Extracted, list[dict]]:
    """The block, and the constructor try the source library's own use of the class gives (with its forward
    inputs), when that use was recorded: the definitions it passes are copied into the block. When they
    cannot be, the block is extracted alone and validated with guessed arguments only."""
    if usage is not None:
        try:
            extracted = extractor.extract(module, name, tuple(sorted(usage.refs)))
        except ExtractionFailure:
            pass
        else:
            return extracted, [_renamed(usage.as_try(), extracted.names)]
    return extractor.extract(module, name), []


def _renamed(value, names: dict[str, str]):
    """An encoded value with its {"ref": "module:Name"} references renamed to their names in the block."""
    if isinstance(value, list):
        return [_renamed(v, names) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: _renamed(v, names) for k, v in value.items()}
    if isinstance(value.get("ref"), str) and ":" in value["ref"]:
        out["ref"] = names.get(value["ref"], value["ref"])
    return out


def validate(items: list[dict], blocked: list[str], *, timeout_s: float = 900, block_cpu_s: int = 30,
             on_progress: Callable[[int, int], None] | None = None) -> list[dict]:
    """Run `sandbox/blockcheck.py` over `items` ({"code", "tries"}), one confined process per core, with
    the `blocked` packages unimportable. One answer per item. A block gets `block_cpu_s` seconds of CPU
    time (not wall time: a busy machine does not fail it); `timeout_s` bounds each process's wall time."""
    if not items:
        return []
    done = [0]

    def run(indices: list[int]) -> list[dict]:
        answers = []
        for start in range(0, len(indices), 50):  # a fresh process every 50 blocks bounds leaks and crashes
            batch = indices[start:start + 50]
            answers += _check_process([items[i] for i in batch], blocked, timeout_s, block_cpu_s)
            done[0] += len(batch)
            if on_progress:
                on_progress(done[0], len(items))
        return answers

    return in_parallel(len(items), max(1, min(os.cpu_count() or 1, len(items))), run)


def _check_process(items: list[dict], blocked: list[str], timeout_s: float, block_cpu_s: int) -> list[dict]:
    request = json.dumps({"items": items, "blocked": blocked, "cpu_s": int(timeout_s), "per_item_s": block_cpu_s,
                          "native_marker": NATIVE_OP})
    try:
        proc = subprocess.run([sys.executable, "-I", "-B", str(BLOCKCHECK)], input=request, capture_output=True,
                              text=True, timeout=timeout_s, env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    except subprocess.TimeoutExpired:
        return [{"ok": False, "kind": "timeout", "error": f"the check process ran past {timeout_s:.0f} s"}] * len(items)
    try:
        answers = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        answers = None
    if not isinstance(answers, list) or len(answers) != len(items):
        if len(items) > 1:  # one block took the process down: check each alone to find it
            return [a for item in items for a in _check_process([item], blocked, timeout_s, block_cpu_s)]
        return [{"ok": False, "kind": "crashed", "error": f"exit {proc.returncode}: {proc.stderr[-300:]}"}]
    return answers


def _save(path: Path, rows: list[dict]) -> None:
    from nngpt_ray.dedup import Deduplicator

    index = Deduplicator(num_perm=128)
    with sqlite3.connect(path) as db:
        db.executescript(SCHEMA)
        for row in rows:
            sketch = index.sketch(row["code"]).hashvalues.astype("uint64").tobytes() if "code" in row else None
            db.execute("INSERT OR REPLACE INTO blocks VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                       (row["target"], row["source"], row["status"], row["stage"], row.get("kind"),
                        row.get("detail"), row.get("file"), row.get("lines"), row.get("init_kwargs"),
                        row.get("input_shape"), row.get("output_shape"), row.get("parameters"),
                        row.get("seconds"), row.get("stand_ins"), sketch))


@dataclass(frozen=True)
class Block:
    target: str
    code: str
    init_kwargs: dict
    input_shape: list
    lines: int = 0
    stand_ins: str | None = None

    def body(self) -> str:
        """The block's code without its header docstring and the `BLOCK = ...` line (for prompts)."""
        lines = self.code.splitlines()
        return "\n".join(line for line in lines[1:] if not line.startswith("BLOCK = ")).strip() + "\n"


def valid_blocks(out: Path) -> list[Block]:
    """The valid blocks of a block store, by target name."""
    db_path = out / "blocks.sqlite"
    if not db_path.exists():
        raise UserError(f"{out} holds no block store (blocks.sqlite): run `nngpt rag build --out {out}` first")
    with sqlite3.connect(db_path) as db:
        rows = db.execute("SELECT target, file, init_kwargs, input_shape, lines, stand_ins FROM blocks "
                          "WHERE status = 'valid' ORDER BY target").fetchall()
    return [Block(t, (out / f).read_text(), json.loads(k or "{}") or {}, json.loads(s or "[]") or [], n or 0, si)
            for t, f, k, s, n, si in rows]


def prompt_blocks(out: Path, max_lines: int = 80) -> list[Block]:
    """The blocks fit to show a code LLM: network parts (not data transforms), no stand-ins, short."""
    blocks = [b for b in valid_blocks(out) if ".transforms." not in b.target and not b.stand_ins
              and b.lines <= max_lines]
    if not blocks:
        raise UserError(f"{out} has no valid network block of at most {max_lines} lines (rag.max_lines)")
    return blocks

