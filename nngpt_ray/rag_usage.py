"""How a source library itself builds and calls its modules, for NN-RAG's validation.

Guessing constructor arguments from a signature fails where a module takes other modules, config objects
or lists of them (`ResNet(block, layers)`, `MobileNetV3(inverted_residual_setting, ...)`,
`FasterRCNN(backbone, ...)`), and guessing a dummy input fails where a forward takes lists, channels-last
tensors or video clips. The library's own model builders know both. `observe` runs each builder once with
its parameters on the meta device (no memory, no weights, nothing downloaded) and records, for every
instance of a class of the package or of `torch.nn`, the arguments it was constructed with and the
arguments of its first forward call. A forward that stops midway (detection post-processing needs real
data) still records every module it reached.

Recorded values are encoded as JSON the validating process rebuilds without the source package
(`sandbox/blockcheck.py`, `_value`): plain values and lists as they are, `{"tuple": [...]}`,
`{"dict": {...}}`, `{"odict": [[k, v], ...]}`, `{"tensor": shape, "dtype": name}` (random or zero
data), `{"dtype": name}`, `{"ref": "module:Name"}` (a definition of the package, copied into the block),
`{"torch": "module:Name"}`, either of those two with `"args"`/`"kwargs"` (an instance built so),
`{"partial": f, "args", "kwargs"}` and `{"enum": ref, "name": member}`.
"""

from __future__ import annotations

import enum
import functools
import importlib
import inspect
import math
import pkgutil
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass
class Usage:
    """One recorded instance of a class: how it was built and (if it was called) what it was called with."""

    args: list
    kwargs: dict
    inputs: list | None  # the encoded positional arguments of its first forward call
    params: int  # its parameter count (the smallest recorded instance is the one kept)
    refs: set[tuple[str, str]] = field(default_factory=set)  # package definitions the encoding names

    def as_try(self) -> dict:
        return {"args": self.args, "kwargs": self.kwargs, "inputs": self.inputs}


class Unencodable(Exception):
    pass


def observe(package: str, wanted: set[str] | None = None) -> dict[str, Usage]:
    """`module.Class` -> the smallest recorded usage, for every class of `package` its builders instantiate.
    Packages without known builders (anything but torchvision today) give {}. `wanted` (a narrowed build,
    `--match`): the builders of the wanted classes' own modules go first, each model is built only when its
    turn comes, and recording stops once each of these `module.Class` names has been constructed and called."""
    calls = {"torchvision": _torchvision_calls}.get(package)
    if calls is None:
        return {}
    import torch

    recorder = _Recorder(package)
    with recorder, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        builds = list(calls())
        if wanted is None:  # every model built, then run smallest first (the smallest use of each class wins)
            models = sorted(filter(None, (_built(build, inputs) for build, inputs in builds)), key=lambda m: m[0])
        else:
            near = {name.rpartition(".")[0] for name in wanted}
            builds.sort(key=lambda call: call[0].func.__module__ not in near)
            models = filter(None, (_built(build, inputs) for build, inputs in builds))
        for _, model, inputs in models:
            for training in (False, True):  # training mode reaches what inference skips (auxiliary heads)
                if not recorder.new_classes(model):  # all its classes already called by an earlier model
                    break
                try:
                    with torch.device("meta"):
                        model.train(training)(*inputs())
                except Exception:  # a forward that needs real data: what it reached is recorded
                    pass
            if wanted is not None and wanted <= recorder.called_names():
                break
    return recorder.usages()


def _built(build, inputs) -> tuple | None:
    """(parameter count, the model, its inputs), or None where the builder fails."""
    try:
        model = _on_meta(build)
    except Exception:
        return None
    return sum(p.numel() for p in model.parameters()), model, inputs


def _on_meta(build):
    """Build with parameters and buffers on the meta device: under `torch.device("meta")`, or, where the
    constructor computes with tensors (`.item()`, `.tolist()`), with only parameters and buffers moved."""
    import torch

    try:
        with torch.device("meta"):
            return build()
    except Exception:
        pass
    register_parameter, register_buffer = torch.nn.Module.register_parameter, torch.nn.Module.register_buffer

    def parameter(self, name, param):
        if param is not None:
            param = torch.nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        return register_parameter(self, name, param)

    def buffer(self, name, tensor, persistent=True):
        return register_buffer(self, name, None if tensor is None else tensor.to("meta"), persistent)

    torch.nn.Module.register_parameter, torch.nn.Module.register_buffer = parameter, buffer
    try:
        return build()
    finally:
        torch.nn.Module.register_parameter, torch.nn.Module.register_buffer = register_parameter, register_buffer


def _torchvision_calls() -> Iterator[tuple]:
    """(build, inputs) for every model builder torchvision registers, without weights."""
    import torch
    import torchvision.models as models

    for name in models.list_models():
        builder = models.get_model_builder(name)
        accepted = inspect.signature(builder).parameters
        kwargs = {k: v for k, v in (("weights", None), ("weights_backbone", None), ("quantize", False))
                  if k in accepted}
        where = builder.__module__
        if ".detection." in where:  # at a small image size, keeping few proposals: the same classes, cheap to run
            if name.split("_")[0] in ("fasterrcnn", "maskrcnn", "keypointrcnn", "retinanet", "fcos"):
                kwargs |= {"min_size": 128, "max_size": 128}
            if name.split("_")[0] in ("fasterrcnn", "maskrcnn", "keypointrcnn"):
                kwargs |= {"rpn_pre_nms_top_n_test": 100, "rpn_post_nms_top_n_test": 50}
            shapes = [[(3, 128, 128)]]
        elif ".video." in where:
            shapes = [(1, 3, 16, 224, 224) if "mvit" in name else (1, 3, 16, 112, 112)]
        elif ".optical_flow." in where:
            shapes = [(1, 3, 128, 128), (1, 3, 128, 128)]
        else:
            shapes = [(1, 3, 224, 224)]

        def inputs(shapes=shapes):
            return [[torch.randn(*s) for s in x] if isinstance(x, list) else torch.randn(*x) for x in shapes]

        yield functools.partial(builder, **kwargs), inputs


class _Recorder:
    """While active: every constructor call of a class of the package or of torch.nn is recorded (by the
    instance's id; the instances are kept alive), and the first forward call of every module."""

    def __init__(self, package: str) -> None:
        self.package = package
        self.built: dict[int, tuple[object, tuple, dict]] = {}
        self.called: dict[int, tuple] = {}
        self._patched: list[tuple[type, object]] = []
        self._called_classes: set[type] = set()
        self._hook = None

    def __enter__(self) -> _Recorder:
        import torch

        for cls in _classes(self.package) + _classes("torch.nn.modules"):
            self._wrap(cls)
        self._hook = torch.nn.modules.module.register_module_forward_pre_hook(self._forward)
        return self

    def __exit__(self, *exc) -> None:
        self._hook.remove()
        for cls, original in reversed(self._patched):
            if original is None:
                del cls.__init__
            else:
                cls.__init__ = original

    def _wrap(self, cls: type) -> None:
        init = cls.__init__
        if not inspect.isfunction(init):
            return  # object.__init__ and C slots: nothing to record
        built = self.built

        @functools.wraps(init)
        def __init__(obj, *args, **kwargs):
            if type(obj) is cls and id(obj) not in built:
                built[id(obj)] = (obj, args, kwargs)
            init(obj, *args, **kwargs)

        self._patched.append((cls, vars(cls).get("__init__")))
        cls.__init__ = __init__

    def _forward(self, module, args) -> None:
        if id(module) not in self.called:
            self.called[id(module)] = args
            self._called_classes.add(type(module))

    def called_names(self) -> set[str]:
        return {f"{cls.__module__}.{cls.__qualname__}" for cls in self._called_classes}

    def new_classes(self, model) -> bool:
        """Whether the model holds a module of the package of a class no recorded forward has called yet."""
        return any(type(m) not in self._called_classes and type(m).__module__.startswith(self.package)
                   for m in model.modules())

    def usages(self) -> dict[str, Usage]:
        best: dict[str, Usage] = {}
        for key, (obj, args, kwargs) in self.built.items():
            cls = type(obj)
            if not cls.__module__.startswith(self.package) or not hasattr(obj, "parameters"):
                continue
            refs: set[tuple[str, str]] = set()
            try:
                usage = Usage([self.encode(a, refs) for a in args], {k: self.encode(v, refs) for k, v in kwargs.items()},
                              None, sum(p.numel() for p in obj.parameters()), refs)
            except (Unencodable, RecursionError):
                continue
            if key in self.called:
                try:
                    usage.inputs = [self.encode(a, usage.refs) for a in self.called[key]]
                except (Unencodable, RecursionError):
                    pass
            target = f"{cls.__module__}.{cls.__qualname__}"
            kept = best.get(target)
            if kept is None or (usage.inputs is not None, -usage.params) > (kept.inputs is not None, -kept.params):
                best[target] = usage
        return best

    def encode(self, value, refs: set, depth: int = 0):
        import torch

        if depth > 40:
            raise Unencodable("too deep")
        again = functools.partial(self.encode, refs=refs, depth=depth + 1)
        if value is None or isinstance(value, (bool, int, str)):
            return value
        if isinstance(value, float):
            if not math.isfinite(value):
                raise Unencodable("not a finite float")
            return value
        if isinstance(value, torch.Tensor):
            return {"tensor": list(value.shape), "dtype": str(value.dtype).removeprefix("torch.")}
        if isinstance(value, torch.dtype):
            return {"dtype": str(value).removeprefix("torch.")}
        if isinstance(value, enum.Enum):
            return {"enum": self._ref(type(value), refs), "name": value.name}
        if isinstance(value, functools.partial):
            return {"partial": again(value.func), "args": [again(a) for a in value.args],
                    "kwargs": {k: again(v) for k, v in value.keywords.items()}}
        if isinstance(value, OrderedDict):
            return {"odict": [[again(k), again(v)] for k, v in value.items()]}
        if isinstance(value, dict):
            if not all(isinstance(k, str) for k in value):
                raise Unencodable("a dict with keys that are not strings")
            return {"dict": {k: again(v) for k, v in value.items()}}
        if isinstance(value, (torch.Size, tuple)):
            return {"tuple": [again(v) for v in value]}
        if isinstance(value, list):
            return [again(v) for v in value]
        if inspect.isclass(value) or inspect.isfunction(value) or inspect.isbuiltin(value):
            return self._ref(value, refs)
        if id(value) in self.built and self.built[id(value)][0] is value:
            _, args, kwargs = self.built[id(value)]
            return self._ref(type(value), refs) | {"args": [again(a) for a in args],
                                                   "kwargs": {k: again(v) for k, v in kwargs.items()}}
        raise Unencodable(f"a {type(value).__name__}")

    def _ref(self, obj, refs: set) -> dict:
        module, name = getattr(obj, "__module__", None) or "", getattr(obj, "__qualname__", "")
        if "." in name or "<" in name or not module:
            raise Unencodable(f"{obj!r} is not a module-level definition")
        if module.split(".")[0] == self.package.split(".")[0]:
            refs.add((module, name))
            return {"ref": f"{module}:{name}"}
        if module.split(".")[0] == "torch":
            return {"torch": f"{module}:{name}"}
        raise Unencodable(f"{module}.{name} is outside torch and {self.package}")


def package_modules(package: str) -> tuple[list, dict[str, str]]:
    """Every module of the installed package, imported (trusted library code), and those that failed to
    import here (module -> reason; optional dependencies)."""
    root = importlib.import_module(package)
    names = [root.__name__] + [m.name for m in pkgutil.walk_packages(root.__path__, root.__name__ + ".")]
    modules, broken = [], {}
    for name in names:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                modules.append(importlib.import_module(name))
        except Exception as err:
            broken[name] = f"{type(err).__name__}: {err}"[:200]
    return modules, broken


def _classes(package: str) -> list[type]:
    """The classes defined in the package's modules (each once)."""
    found: dict[int, type] = {}
    for module in package_modules(package)[0]:
        for value in vars(module).values():
            if inspect.isclass(value) and value.__module__ == module.__name__ \
                    and not issubclass(value, (BaseException, enum.Enum)):
                found[id(value)] = value
    return list(found.values())
