"""Runs one candidate network inside its sandbox process: `python -I child.py JOB.json`.

This file is a standalone script (standard library, numpy and torch only), so the code that sits next
to untrusted code is small and imports nothing of nngpt_ray. It first locks itself down (cgroup,
network namespace, resource limits), then loads the data the parent prepared (training images and
labels, validation *images only*), installs a runtime audit hook, and only then imports the
candidate. It reports on a private pipe: per epoch, the candidate's class predictions for the
validation images. It never reports an accuracy: the parent holds the labels and scores them itself.
"""

import ctypes
import importlib.util
import inspect
import json
import math
import os
import random
import resource
import signal
import sys

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1
_MEMORY_MARKERS = ("out of memory", "can't allocate memory", "cannot allocate memory", "bad_alloc",
                   "memoryerror", "not enough memory")


class CandidateError(Exception):
    """A failure to report with its kind from the closed list."""

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind


def main():
    job = json.load(open(sys.argv[1]))
    result_pipe = os.fdopen(job["result_fd"], "w", buffering=1)
    control_pipe = os.fdopen(job["control_fd"], "r")

    def send(**message):
        result_pipe.write(json.dumps(message) + "\n")
        result_pipe.flush()

    protections = lock_down(job)
    send(t="hello", protections=protections)
    try:
        run(job, send, control_pipe, protections)
    except CandidateError as err:
        send(t="error", kind=err.kind, error=str(err)[-4000:])
    result_pipe.close()
    os._exit(0)


# ---------------------------------------------------------------- process limits (before torch)

def lock_down(job):
    """Die with the parent, join the cgroup, leave the network, set limits that do not depend on torch."""
    done = {}
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL) == 0:
        done["parent_death_signal"] = True
    if os.getppid() != job["parent_pid"]:  # the parent died before the line above took effect
        os._exit(1)
    for procs in job["cgroup_procs"]:
        with open(procs, "w") as f:
            f.write(str(os.getpid()))
    if job["cgroup_procs"]:
        done["cgroup_joined"] = True
    if job["isolate_network"]:
        done["network_namespace"] = _unshare_network()
    limits = job["limits"]
    _limit(resource.RLIMIT_CORE, 0)
    _limit(resource.RLIMIT_CPU, int(limits["cpu_s"]), int(limits["cpu_s"]) + 5)
    _limit(resource.RLIMIT_FSIZE, limits["file_bytes"])
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # Python ignores it: a write past the limit would be a catchable OSError
    done["rlimit_cpu_s"] = int(limits["cpu_s"])
    done["rlimit_file_mb"] = limits["file_bytes"] // 2**20
    if limits.get("nproc") and os.geteuid() != 0:  # root is exempt from RLIMIT_NPROC
        _limit(resource.RLIMIT_NPROC, limits["nproc"])
        done["rlimit_nproc"] = limits["nproc"]
    return done


def _limit(which, soft, hard=None):
    hard = soft if hard is None else hard
    old_soft, old_hard = resource.getrlimit(which)
    if old_hard != resource.RLIM_INFINITY:
        hard = min(hard, old_hard)
        soft = min(soft, hard)
    resource.setrlimit(which, (soft, hard))


def _unshare_network():
    """Own, empty network namespace: as root directly, otherwise through a user namespace."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) == 0:
        return "netns"
    if libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) == 0:
        return "userns+netns"
    return "unavailable: " + os.strerror(ctypes.get_errno())


# ---------------------------------------------------------------- the run

def run(job, send, control_pipe, protections):
    import numpy as np
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(job["threads"])
    torch.manual_seed(job["seed"])
    random.seed(job["seed"])
    np.random.seed(job["seed"] % 2**32)
    device = _pick_device(torch, job["device"])
    train_x, train_y, val_x = _load_data(job, np, torch, F)

    if device.type == "cpu":  # CUDA reserves huge virtual ranges: there the cgroup / parent watchdog rule
        allowance = _vm_size_bytes() + job["limits"]["memory_bytes"]
        _limit(resource.RLIMIT_AS, allowance)
        protections["rlimit_as_mb"] = allowance // 2**20
    _limit(resource.RLIMIT_NOFILE, job["limits"]["nofile"])
    protections["rlimit_nofile"] = job["limits"]["nofile"]
    if job["audit"]["enabled"]:
        sys.addaudithook(_AuditPolicy(job["audit"]["read_roots"], job["audit"]["write_root"]))
        protections["audit_hook"] = True
    send(t="armed", protections=protections)  # last word before any candidate code runs

    module = _load_candidate(job["code_path"])
    prm = dict(job["prm"])
    in_shape = (prm["batch"], *job["sample_shape"])
    out_shape = (job["classes"],)
    model = _build(module, in_shape, out_shape, prm, device, torch)
    _check_forward(model, val_x[:2].to(device), job["classes"], torch)
    n_params = sum(p.numel() for p in model.parameters())
    try:
        model.train_setup(prm)
    except Exception as err:
        raise _classified(err, "train_error", "train_setup() failed") from None
    send(t="ready", params=int(n_params), device=str(device))

    batches = Batches(train_x, train_y, prm["batch"], job["transform"]["hflip"], job["seed"], torch)
    loss_meter = LossMeter(batches, job["classes"], torch, F)
    model.register_forward_hook(loss_meter.hook)
    for epoch in range(1, job["epochs"] + 1):
        loss_meter.reset()
        model.train()
        try:
            model.learn(batches)
        except Exception as err:
            raise _classified(err, "train_error", f"learn() failed in epoch {epoch}") from None
        loss = loss_meter.mean()
        if loss is not None and not math.isfinite(loss):
            raise CandidateError("nan", f"training loss became {loss} in epoch {epoch}")
        predictions = _predict(model, val_x, device, job["classes"], torch)
        send(t="epoch", epoch=epoch, train_loss=loss, pred=predictions)
        if epoch < job["epochs"] and control_pipe.readline().strip() != "go":
            break
    send(t="done")


def _pick_device(torch, wanted):
    if wanted == "cuda" or (wanted == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise CandidateError("crashed", "device 'cuda' requested but CUDA is not available in the sandbox")
        device = torch.device("cuda")
        torch.zeros(1, device=device).sum().item()  # initialise CUDA before the audit hook is in place
        return device
    return torch.device("cpu")


def _load_data(job, np, torch, F):
    data, tf = job["data"], job["transform"]
    train_x = torch.from_numpy(np.load(data["train_x"]))
    train_y = torch.from_numpy(np.load(data["train_y"]).astype("int64"))
    val_x = torch.from_numpy(np.load(data["val_x"]))
    mean = torch.tensor(job["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(job["std"]).view(1, -1, 1, 1)

    def prepare(images):
        out = []
        for start in range(0, len(images), 4096):
            x = images[start:start + 4096].float().div_(255)
            if tf["resize"] and tuple(x.shape[-2:]) != (tf["resize"], tf["resize"]):
                x = F.interpolate(x, size=(tf["resize"], tf["resize"]), mode="bilinear", align_corners=False)
            if tf["normalize"]:
                x = (x - mean) / std
            out.append(x)
        return torch.cat(out)

    return prepare(train_x), train_y, prepare(val_x)


def _vm_size_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _load_candidate(path):
    try:
        spec = importlib.util.spec_from_file_location("candidate", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except SyntaxError as err:
        raise CandidateError("syntax", f"SyntaxError: {err.msg} at line {err.lineno}") from None
    except Exception as err:
        raise _classified(err, "contract", "importing the module failed") from None
    net = getattr(module, "Net", None)
    if not inspect.isclass(net):
        raise CandidateError("contract", "the module defines no class Net")
    if not callable(getattr(module, "supported_hyperparameters", None)):
        raise CandidateError("contract", "the module defines no supported_hyperparameters()")
    try:
        inspect.signature(net).bind("in_shape", "out_shape", "prm", "device")
    except TypeError:
        raise CandidateError("contract", f"Net{inspect.signature(net)} cannot be called as "
                                         "Net(in_shape, out_shape, prm, device)") from None
    for name in ("train_setup", "learn", "forward"):
        if not callable(getattr(net, name, None)):
            raise CandidateError("contract", f"Net has no method {name}()")
    return module


def _build(module, in_shape, out_shape, prm, device, torch):
    try:
        declared = set(module.supported_hyperparameters())
    except Exception as err:
        raise _classified(err, "contract", "supported_hyperparameters() failed") from None
    missing = sorted(k for k in declared if k not in prm)
    if missing:
        raise CandidateError("contract", f"no value for declared hyperparameters: {', '.join(missing)}")
    try:
        model = module.Net(in_shape, out_shape, prm, device)
    except Exception as err:
        raise _classified(err, "forward", f"building Net for input {in_shape} failed") from None
    if not isinstance(model, torch.nn.Module):
        raise CandidateError("contract", "Net is not a torch.nn.Module")
    try:
        return model.to(device)
    except Exception as err:
        raise _classified(err, "forward", "moving Net to the device failed") from None


def _check_forward(model, sample, classes, torch):
    model.eval()
    try:
        with torch.no_grad():
            out = model(sample)
    except Exception as err:
        raise _classified(err, "forward", f"forward() failed on input of shape {tuple(sample.shape)}") from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (len(sample), classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise CandidateError("forward", f"forward() returned {shape} for input {tuple(sample.shape)}; "
                                        f"expected ({len(sample)}, {classes})")


def _predict(model, val_x, device, classes, torch):
    model.eval()
    predictions = []
    try:
        with torch.no_grad():
            for start in range(0, len(val_x), 512):
                out = model(val_x[start:start + 512].to(device))
                if isinstance(out, (tuple, list)):
                    out = out[0]
                if tuple(out.shape) != (min(512, len(val_x) - start), classes):
                    raise CandidateError("forward", f"forward() returned {tuple(out.shape)} during validation")
                if not torch.isfinite(out).all():
                    raise CandidateError("nan", "the network produced NaN or infinite outputs")
                predictions.extend(out.argmax(1).tolist())
    except CandidateError:
        raise
    except Exception as err:
        raise _classified(err, "forward", "forward() failed during validation") from None
    return predictions


def _classified(err, kind, context):
    text = f"{context}: {type(err).__name__}: {err}"
    if isinstance(err, MemoryError) or any(m in text.lower() for m in _MEMORY_MARKERS):
        kind = "memory"
    return CandidateError(kind, text)


class Batches:
    """The training DataLoader handed to learn(): shuffled mini-batches of tensors, optional h-flip.

    Indexing whole tensors is ~50x faster than a TensorDataset + DataLoader on small images, and
    the labels of the batch in flight are what the loss meter scores the forward pass against.
    """

    def __init__(self, x, y, batch_size, hflip, seed, torch):
        self.x, self.y, self.batch_size, self.hflip = x, y, batch_size, hflip
        self.torch = torch
        self.generator = torch.Generator().manual_seed(seed)
        self.dataset = torch.utils.data.TensorDataset(x, y)
        self.current_labels = None

    def __len__(self):
        return (len(self.x) + self.batch_size - 1) // self.batch_size

    def __iter__(self):
        torch = self.torch
        order = torch.randperm(len(self.x), generator=self.generator)
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            xb, yb = self.x[idx], self.y[idx]
            if self.hflip:
                flip = torch.rand(len(idx), generator=self.generator) < 0.5
                xb[flip] = xb[flip].flip(-1)
            self.current_labels = yb
            yield xb, yb
        self.current_labels = None


class LossMeter:
    """Training loss measured by the harness: cross-entropy of each training forward pass."""

    def __init__(self, batches, classes, torch, F):
        self.batches, self.classes, self.torch, self.F = batches, classes, torch, F
        self.total, self.count = 0.0, 0

    def reset(self):
        self.total, self.count = 0.0, 0

    def hook(self, module, inputs, output):
        labels = self.batches.current_labels
        if not module.training or labels is None:
            return
        if isinstance(output, (tuple, list)) and output:
            output = output[0]
        if not isinstance(output, self.torch.Tensor) or tuple(output.shape) != (len(labels), self.classes):
            return
        with self.torch.no_grad():
            loss = self.F.cross_entropy(output.detach().float(), labels.to(output.device)).item()
        self.total += loss * len(labels)
        self.count += len(labels)

    def mean(self):
        return self.total / self.count if self.count else None


class _AuditPolicy:
    """Runtime guard (PEP 578) for what static checks cannot see: reads outside the Python install and
    the data, writes outside the scratch directory, sockets, processes, signals, ctypes.

    Python's docs are clear that audit hooks are not a security boundary on their own; here they stand
    behind the static check and in front of the process limits.
    """

    _BLOCKED = ("socket.", "subprocess.", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
                "os.forkpty", "os.kill", "os.killpg", "signal.pthread_kill", "ctypes.", "resource.setrlimit",
                "resource.prlimit", "sys.addaudithook", "urllib.", "http.", "ftplib.", "smtplib.", "os.startfile",
                "pty.", "webbrowser.", "sys.remote_exec", "os.setuid", "os.setgid", "os.chroot")
    _WRITE_EVENTS = ("os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.link",
                     "os.symlink", "os.truncate", "os.utime", "shutil.rmtree", "shutil.copyfile",
                     "shutil.copymode", "shutil.copystat", "shutil.copytree", "shutil.move", "os.chdir",
                     "os.chflags", "os.setxattr", "os.removexattr", "shutil.chown")
    _READ_EVENTS = ("os.listdir", "os.scandir", "glob.glob", "os.getxattr", "os.listxattr")

    def __init__(self, read_roots, write_root):
        self.read_roots = tuple(os.path.realpath(r) for r in read_roots)
        self.write_root = os.path.realpath(write_root)

    def __call__(self, event, args):
        if event == "open":
            self._check_open(args)
        elif event.startswith(self._BLOCKED):
            raise PermissionError(f"sandbox: '{event}' is not allowed")
        elif event.startswith(self._WRITE_EVENTS):
            for arg in args:
                if isinstance(arg, (str, bytes, os.PathLike)) and not self._under(arg, (self.write_root,)):
                    raise PermissionError(f"sandbox: '{event}' outside the scratch directory is not allowed")
        elif event.startswith(self._READ_EVENTS):
            if args and isinstance(args[0], (str, bytes, os.PathLike)) and not self._under(args[0], self.read_roots):
                raise PermissionError(f"sandbox: '{event}' of {args[0]!r} is not allowed")

    def _check_open(self, args):
        path, mode, flags = args[0], args[1], args[2] if len(args) > 2 else 0
        if isinstance(path, int) or path is None:
            return
        writing = (mode is not None and any(c in str(mode) for c in "wax+")) or (
            mode is None and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND))
        roots = (self.write_root,) if writing else self.read_roots
        if not self._under(path, roots):
            raise PermissionError(f"sandbox: opening {path!r} for {'writing' if writing else 'reading'} is not allowed")

    @staticmethod
    def _under(path, roots):
        try:
            real = os.path.realpath(os.fsdecode(path))
        except (TypeError, ValueError):
            return False
        return any(real == r or real.startswith(r.rstrip("/") + "/") for r in roots)


if __name__ == "__main__":
    main()
