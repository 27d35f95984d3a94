"""The fork server and the candidate child: `python -I child.py SOCKET_FD`.

This file is a standalone script (standard library, numpy and torch only), so the code that sits next
to untrusted code is small and imports nothing of nngpt_ray.

The process started from it is a *zygote*: it imports torch once, prepares each dataset it is asked for
once (training images and labels, validation and test *images only*), and then forks one child per
candidate. It never runs candidate code itself and never initialises CUDA (a forked CUDA context is
unusable; each child initialises its own). It is a child subreaper, so a candidate's descendants that
detach (setsid, double fork) are re-parented to it and stay findable; it dies with its trainer.

Each child confines itself right after the fork, before anything of the candidate runs: new session
and process group, death with the zygote, every inherited file descriptor closed, an environment
rebuilt from nothing, the scratch directory as cwd, its cgroup, its own network namespace, resource
limits, and then (once the data is on the device) the runtime audit hook. It reports on a private
pipe: a heartbeat for every batch it hands out and every phase it finishes (the parent's stall
watchdog), and per epoch the candidate's class predictions for the validation images. It never
reports an accuracy: the parent holds the labels and scores them itself.
"""

import ctypes
import importlib.util
import inspect
import json
import math
import os
import random
import resource
import select
import signal
import socket
import sys
import time

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
BEAT_EVERY_S = 0.5  # heartbeats are rate-limited: one per half second at most
_MEMORY_MARKERS = ("out of memory", "can't allocate memory", "cannot allocate memory", "bad_alloc",
                   "memoryerror", "not enough memory")


class CandidateError(Exception):
    """A failure to report with its kind from the closed list."""

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind


# ---------------------------------------------------------------- the zygote

def zygote(sock_fd, parent_pid):
    """Import torch once, then fork one confined child per request until the trainer hangs up."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the trainer died before the line above took effect
        os._exit(1)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1)
    _set_group_nice(_group_nice(parent_pid))  # started in its own session, as each child is
    import numpy as np
    import torch
    import torch.nn.functional as F

    import torch._dynamo  # noqa: F401  every child's first optimizer step imports it (~2 CPU-s): paid once, here
    try:  # networks may import it, and a child cannot: its compiled ops do not load under the confinement
        import torchvision  # noqa: F401
    except Exception:
        pass
    torch.set_num_threads(1)  # no thread pool may exist in a process that forks
    sock = socket.socket(fileno=sock_fd)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    _reply(sock, t="ready", pid=os.getpid(), torch=torch.__version__)
    cache = {}
    current = None  # the one candidate child alive (a trainer trains one candidate at a time)
    while True:
        readable = select.select([sock, wake_r], [], [], 1.0)[0]
        if wake_r in readable:
            os.read(wake_r, 4096)
        while True:  # reap the candidate and any re-parented descendant of it
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid == current:
                _reply(sock, t="exit", pid=pid, code=os.waitstatus_to_exitcode(status))
                current = None
        if sock not in readable:
            continue
        try:
            message, fds, _, _ = socket.recv_fds(sock, 1 << 20, 8)
        except OSError:
            os._exit(0)
        if not message:  # the trainer closed its end
            os._exit(0)
        request = json.loads(message)
        try:
            data = _prepared(request["job"], cache, np, torch, F)
        except Exception as err:  # a missing or unreadable array file: the parent classifies it
            for fd in fds:
                os.close(fd)
            _reply(sock, t="error", error=f"{type(err).__name__}: {err}"[:2000])
            continue
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            _child(request["job"], fds, data)  # never returns
        for fd in fds:
            os.close(fd)
        current = pid
        _reply(sock, t="spawned", pid=pid)


def _group_nice(pid="self"):
    """The nice value of the scheduling group of process `pid` where the kernel groups processes by session
    (autogroup); None where it does not."""
    try:
        with open(f"/proc/{pid}/autogroup") as f:
            return int(f.read().split()[-1])
    except (OSError, ValueError, IndexError):
        return None


def _set_group_nice(nice):
    """Right after a new session began: under autogroup that session is a new scheduling group at the
    default priority, which would lift a sandbox out of a trainer started at a low priority (a batch job
    that did `echo 19 > /proc/self/autogroup`). It takes over the value of the group it left; nothing
    changes where that was 0 (the usual case) or where there are no such groups."""
    if nice:
        try:
            with open("/proc/self/autogroup", "w") as f:
                f.write(str(nice))
        except OSError:
            pass


def _reply(sock, **message):
    sock.send(json.dumps(message).encode())


def _prepared(job, cache, np, torch, F):
    """The job's data as float tensors (scaled, resized, normalized), prepared once per dataset and
    transform and shared copy-on-write with every child. At most two versions are kept."""
    data, tf = job["data"], job["transform"]
    key = json.dumps([data, tf["resize"], tf["normalize"], job["mean"], job["std"]], sort_keys=True)
    if key not in cache:
        mean = torch.tensor(job["mean"]).view(1, -1, 1, 1)
        std = torch.tensor(job["std"]).view(1, -1, 1, 1)

        def prepare(path):
            images = torch.from_numpy(np.load(path))
            out = []
            for start in range(0, len(images), 4096):
                x = images[start:start + 4096].float().div_(255)
                if tf["resize"] and tuple(x.shape[-2:]) != (tf["resize"], tf["resize"]):
                    x = F.interpolate(x, size=(tf["resize"], tf["resize"]), mode="bilinear", align_corners=False)
                if tf["normalize"]:
                    x = (x - mean) / std
                out.append(x)
            return torch.cat(out)

        prepared = {"train_x": prepare(data["train_x"]),
                    "train_y": torch.from_numpy(np.load(data["train_y"]).astype("int64")),
                    "val_x": prepare(data["val_x"]),
                    "test_x": prepare(data["test_x"]) if data.get("test_x") else None}
        while len(cache) >= 2:
            cache.pop(next(iter(cache)))
        cache[key] = prepared
    return cache[key]


# ---------------------------------------------------------------- the child, right after the fork

def _child(job, fds, data):
    result_fd, control_fd, output_fd = fds
    code = 0
    try:
        nice = _group_nice()
        os.setsid()  # own session and process group: the parent kills the group
        _set_group_nice(nice)
        os.dup2(output_fd, 1)
        os.dup2(output_fd, 2)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        _close_fds_except({0, 1, 2, result_fd, control_fd})
        os.environ.clear()
        os.environ.update(job["env"])
        os.chdir(job["scratch"])
        result_pipe = os.fdopen(result_fd, "w", buffering=1)
        control_pipe = os.fdopen(control_fd, "r")
        reporter = Reporter(result_pipe)
        protections = lock_down(job)
        reporter.send(t="hello", protections=protections)
        try:
            run(job, data, reporter, control_pipe, protections)
        except CandidateError as err:
            reporter.send(t="error", kind=err.kind, error=str(err)[-4000:])
        result_pipe.close()
    except BaseException:  # a candidate's SystemExit, or a broken pipe: the parent sees no complete result
        code = 1
    os._exit(code)


def _close_fds_except(keep):
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


def lock_down(job):
    """Die with the zygote, join the cgroup, leave the network, set limits that do not depend on torch."""
    done = {}
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL) == 0:
        done["parent_death_signal"] = True
    if os.getppid() != job["zygote_pid"]:  # the zygote died before the line above took effect
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


class Reporter:
    """The result pipe: messages, and heartbeats that tell the parent's stall watchdog the candidate is
    making progress (a batch taken, a phase finished)."""

    def __init__(self, pipe):
        self.pipe = pipe
        self.last_beat = 0.0
        self.phase = None

    def send(self, **message):
        self.pipe.write(json.dumps(message) + "\n")
        self.pipe.flush()
        self.last_beat = time.monotonic()

    def beat(self, phase):
        """A new phase is always reported; within a phase, at most one beat per BEAT_EVERY_S."""
        if phase != self.phase or time.monotonic() - self.last_beat >= BEAT_EVERY_S:
            self.phase = phase
            self.send(t="beat", phase=phase)


# ---------------------------------------------------------------- the run

def run(job, data, reporter, control_pipe, protections):
    import numpy as np
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(job["threads"])
    torch.manual_seed(job["seed"])
    random.seed(job["seed"])
    np.random.seed(job["seed"] % 2**32)
    device = _pick_device(torch, job["device"], job.get("gpu_memory_fraction"))
    train_x, train_y, val_x = data["train_x"], data["train_y"], data["val_x"]

    if device.type == "cpu":  # CUDA reserves huge virtual ranges: there the cgroup / parent watchdog rule
        allowance = _vm_size_bytes() + job["limits"]["memory_bytes"]
        _limit(resource.RLIMIT_AS, allowance)
        protections["rlimit_as_mb"] = allowance // 2**20
    _limit(resource.RLIMIT_NOFILE, job["limits"]["nofile"])
    protections["rlimit_nofile"] = job["limits"]["nofile"]
    if job["audit"]["enabled"]:
        sys.addaudithook(_AuditPolicy(job["audit"]["read_roots"], job["audit"]["write_root"]))
        protections["audit_hook"] = True
    reporter.send(t="armed", protections=protections)  # last word before any candidate code runs

    module = _load_candidate(job["code_path"])
    reporter.beat("imported")
    prm = dict(job["prm"])
    in_shape = (prm["batch"], *job["sample_shape"])
    out_shape = (job["classes"],)
    model = _build(module, in_shape, out_shape, prm, device, torch)
    reporter.beat("built")
    _check_forward(model, val_x[:2].to(device), job["classes"], torch)
    n_params = sum(p.numel() for p in model.parameters())
    features = _features(model, val_x[:1].to(device), torch)
    try:
        model.train_setup(prm)
    except Exception as err:
        raise _classified(err, "train_error", "train_setup() failed") from None
    reporter.send(t="ready", params=int(n_params), device=str(device), features=features)

    batches = Batches(train_x, train_y, prm["batch"], job["transform"]["hflip"], job["seed"], torch, reporter)
    loss_meter = LossMeter(batches, job["classes"], torch, F)
    model.register_forward_hook(loss_meter.hook)
    completed = False
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
        predictions = _predict(model, val_x, device, job["classes"], torch, reporter)
        reporter.send(t="epoch", epoch=epoch, train_loss=loss, pred=predictions)
        if epoch == job["epochs"]:
            completed = True
        elif control_pipe.readline().strip() != "go":
            break
    if completed and data.get("test_x") is not None:  # the one final evaluation on the test split
        reporter.send(t="test", pred=_predict(model, data["test_x"], device, job["classes"], torch, reporter))
    reporter.send(t="done")


def _pick_device(torch, wanted, memory_fraction=None):
    if wanted == "cuda" or (wanted == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise CandidateError("crashed", "device 'cuda' requested but CUDA is not available in the sandbox")
        device = torch.device("cuda")
        if memory_fraction:  # several candidates share one GPU: none may starve the others
            torch.cuda.set_per_process_memory_fraction(memory_fraction)
        torch.zeros(1, device=device).sum().item()  # initialise CUDA (here, never in the zygote) before the audit hook
        return device
    return torch.device("cpu")


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


_WEIGHTED = ("Conv1d", "Conv2d", "Conv3d", "ConvTranspose2d", "Linear")


def _features(model, sample, torch):
    """What the predictor learns from, measured on the built network before it trains: the FLOPs of one
    sample's forward pass, the layers by type (leaf modules) and the depth in weighted layers."""
    layers = {}
    for module in model.modules():
        if not any(True for _ in module.children()):
            name = type(module).__name__
            layers[name] = layers.get(name, 0) + 1
    flops = None
    try:
        from torch.utils.flop_counter import FlopCounterMode

        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(sample)
        flops = int(counter.get_total_flops())
    except Exception:  # a network the counter cannot follow still trains; it just has no FLOP count
        pass
    return {"flops": flops, "depth": sum(n for k, n in layers.items() if k in _WEIGHTED), "layers": layers}


def _predict(model, images, device, classes, torch, reporter):
    model.eval()
    predictions = []
    try:
        with torch.no_grad():
            for start in range(0, len(images), 512):
                out = model(images[start:start + 512].to(device))
                if isinstance(out, (tuple, list)):
                    out = out[0]
                if tuple(out.shape) != (min(512, len(images) - start), classes):
                    raise CandidateError("forward", f"forward() returned {tuple(out.shape)} during validation")
                if not torch.isfinite(out).all():
                    raise CandidateError("nan", "the network produced NaN or infinite outputs")
                predictions.extend(out.argmax(1).tolist())
                reporter.beat("validate")
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
    the labels of the batch in flight are what the loss meter scores the forward pass against. Every
    batch handed out is a heartbeat for the parent's stall watchdog.
    """

    def __init__(self, x, y, batch_size, hflip, seed, torch, reporter):
        self.x, self.y, self.batch_size, self.hflip = x, y, batch_size, hflip
        self.torch, self.reporter = torch, reporter
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
            self.reporter.beat("train")
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
    zygote(int(sys.argv[1]), int(sys.argv[2]))
