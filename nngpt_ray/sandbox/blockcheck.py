"""Validate extracted NN-RAG blocks in one throwaway, confined process.

`python -I blockcheck.py < request.json`, answering one JSON list on the last line of stdout. For each
block: it imports (its code runs as a fresh module), its class `BLOCK` is instantiated (each tried set of
constructor arguments in turn) and one forward pass runs on the first dummy input that fits. The source
packages (`blocked`) cannot be imported here, so a valid block is proven standalone. Like shapecheck.py:
standard library and torch only, never the caller's interpreter, under CPU, address-space and per-block
CPU-time limits, in its own network namespace where the system allows it.
"""

import ctypes
import json
import resource
import signal
import sys
import time
import types

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000


class Blocked:
    """A meta-path finder that refuses the source packages."""

    def __init__(self, roots):
        self.roots = set(roots)

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.roots:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: blocks must be standalone)")
        return None


class TooLong(Exception):
    pass


EXPIRED = [False]  # set by the timer: a block's own `except Exception` may swallow TooLong, never this


def _alarm(signum, frame):
    EXPIRED[0] = True
    raise TooLong()


def _expired():
    """Raise TooLong if the block's time ran out: every handler of `check` calls this first, so TooLong
    passes through them, and through the block's own handlers that caught it."""
    if EXPIRED[0]:
        raise TooLong()


def main():
    request = json.load(sys.stdin)
    sys.meta_path.insert(0, Blocked(request["blocked"]))
    for name in list(sys.modules):
        if name.split(".")[0] in request["blocked"]:
            del sys.modules[name]
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        libc.unshare(CLONE_NEWUSER | CLONE_NEWNET)
    resource.setrlimit(resource.RLIMIT_CPU, (request["cpu_s"], request["cpu_s"]))
    resource.setrlimit(resource.RLIMIT_AS, (8 * 2**30, 8 * 2**30))
    signal.signal(signal.SIGPROF, _alarm)
    import torch

    torch.set_num_threads(1)
    answers = []
    for i, item in enumerate(request["items"]):
        torch.manual_seed(0)
        EXPIRED[0] = False
        # CPU seconds (process time), not wall time: a block is judged by its own work, not by how busy
        # the machine was; the caller's wall-clock timeout still bounds the whole process.
        signal.setitimer(signal.ITIMER_PROF, request["per_item_s"])
        started = time.monotonic()
        try:
            answers.append(check(f"block{i}", item["code"], item["tries"], torch, request["native_marker"]))
        except TooLong:
            answers.append({"ok": False, "kind": "timeout", "error": f"past {request['per_item_s']} CPU seconds"})
        except MemoryError:
            answers.append({"ok": False, "kind": "instantiate", "error": "MemoryError"})
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0)
            answers[-1]["seconds"] = round(time.monotonic() - started, 2)
    print(json.dumps(answers))


def check(name, code, tries, torch, native_marker):
    """Each try is {"args", "kwargs"} (encoded, see `_value`) and, when the source library's own use of the
    class was recorded, the "inputs" of that use: those are tried first, then dummy inputs."""
    module = types.ModuleType(name)  # registered, as an imported module is (dataclasses and torch.jit look it up)
    sys.modules[name] = module
    try:
        exec(compile(code, f"{name}.py", "exec"), module.__dict__)
        cls = module.BLOCK
    except BaseException as err:
        _expired()
        return {"ok": False, "kind": "import", "error": _text(err)}
    errors = []
    for attempt in tries:
        try:
            model = cls(*[_value(v, module, torch) for v in attempt.get("args", [])],
                        **{k: _value(v, module, torch) for k, v in attempt.get("kwargs", {}).items()})
            model.eval()
            params = sum(p.numel() for p in model.parameters())
        except Exception as err:
            _expired()
            errors.append(f"{_brief(attempt)}: {_text(err)}")
            continue
        arity = _forward_arity(model)
        inputs = [] if attempt.get("inputs") is None else [attempt["inputs"]]
        inputs += [[{"tensor": list(shape), "dtype": "float32"}] * arity for shape in _inputs(attempt.get("kwargs", {}))]
        for encoded in inputs:
            try:
                with torch.no_grad():
                    out = model(*[_value(v, module, torch) for v in encoded])
            except Exception as err:
                _expired()
                if native_marker in str(err):
                    return {"ok": False, "kind": "native_op", "error": _text(err)}
                errors.append(f"input {_brief(encoded)}: {_text(err)}")
                continue
            _expired()
            return {"ok": True, "try": {k: v for k, v in attempt.items() if k != "inputs"}, "input": encoded,
                    "output": _shape(out), "params": params}
        return {"ok": False, "kind": "forward", "error": " | ".join(errors[-3:])[:600], "try": attempt}
    return {"ok": False, "kind": "instantiate", "error": " | ".join(errors[-2:])[:600]}


def _value(v, module, torch):
    """A value encoded by nngpt_ray.rag_usage (or guessed by nngpt_ray.rag.constructor_tries), rebuilt:
    definitions of the block by name, torch's by module path, tensors as random (or zero) data."""
    again = lambda x: _value(x, module, torch)  # noqa: E731
    if isinstance(v, list):
        return [again(x) for x in v]
    if not isinstance(v, dict):
        return v
    if "tuple" in v:
        return tuple(again(x) for x in v["tuple"])
    if "dict" in v:
        return {k: again(x) for k, x in v["dict"].items()}
    if "odict" in v:
        import collections

        return collections.OrderedDict((again(k), again(x)) for k, x in v["odict"])
    if "tensor" in v:
        dtype = getattr(torch, v["dtype"])
        return torch.randn(*v["tensor"], dtype=dtype) if dtype.is_floating_point else torch.zeros(*v["tensor"], dtype=dtype)
    if "dtype" in v:
        return getattr(torch, v["dtype"])
    if "enum" in v:
        return getattr(again(v["enum"]), v["name"])
    if "partial" in v:
        import functools

        return functools.partial(again(v["partial"]), *again(v["args"]), **again({"dict": v["kwargs"]}))
    if "ref" in v:
        obj = getattr(module, v["ref"])
    elif "torch" in v:
        obj = _torch_object(v["torch"], torch)
    else:
        raise ValueError(f"cannot rebuild {v!r}")
    if "args" in v or "kwargs" in v:
        return obj(*again(v.get("args", [])), **again({"dict": v.get("kwargs", {})}))
    return obj


def _torch_object(path, torch):
    """"torch.nn.modules.conv:Conv2d" (module:name), or "nn.Conv2d" (a torch.nn attribute)."""
    if ":" not in path:
        return getattr(torch.nn, path.split(".")[-1])
    import importlib

    where, name = path.split(":")
    return getattr(importlib.import_module(where), name)


def _brief(value):
    return json.dumps(value)[:120]


def _forward_arity(model):
    import inspect

    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return 1
    required = [p for p in params if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return max(1, len(required))


def _inputs(kwargs):
    """Dummy inputs, most likely first: images with the channel count the arguments suggest (or 3), then
    sequences (batch, tokens, width), vectors and video clips."""
    channels = [v for k, v in kwargs.items() if isinstance(v, int) and not isinstance(v, bool)
                and any(w in k.lower() for w in ("in_ch", "inplanes", "inp", "channels", "num_features",
                                                  "features", "dim", "planes", "width", "hidden"))]
    c = channels[0] if channels else 3
    shapes = [(2, c, 32, 32), (2, 3, 32, 32), (2, c, 96, 96), (2, 3, 224, 224), (2, 16, c), (2, c), (2, c, 8, 8),
              (2, 3, 4, 32, 32), (2, 64, 8, 8)]
    seen, out = set(), []
    for s in shapes:
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


def _shape(out):
    if hasattr(out, "shape"):
        return list(out.shape)
    if isinstance(out, (list, tuple)) and out and hasattr(out[0], "shape"):
        return [list(o.shape) for o in out if hasattr(o, "shape")]
    if isinstance(out, dict):
        return {str(k): list(v.shape) for k, v in out.items() if hasattr(v, "shape")}
    return type(out).__name__


def _text(err):
    return f"{type(err).__name__}: {err}"[:300]


if __name__ == "__main__":
    main()
