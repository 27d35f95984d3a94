"""Evaluate one candidate: static checks, then training in a sandboxed child, measured by the parent.

The candidate never runs in the caller's interpreter. The parent streams per-epoch results as they
come, scores accuracy itself from the child's predictions (the child never sees the labels), and turns
every way the run can end into one kind from the closed failure list.

`Session` runs one candidate epoch by epoch (the caller says go or stop after each, as the predictor
gate and a Ray Tune `Trainable.step()` do); `evaluate` is the plain loop over it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import numpy as np

from nngpt_ray.config import SandboxConfig
from nngpt_ray.datasets import PreparedData
from nngpt_ray.failures import FailureKind
from nngpt_ray.parsing import ParseFailure, check_code
from nngpt_ray.sandbox.process import ExitInfo, ForkServer, SandboxProcess, SandboxUnavailable
from nngpt_ray.spec import CandidateSpec, EpochResult, EvalResult

EpochCallback = Callable[[EpochResult, dict], bool]  # (the epoch, the network's features); False: stop early
_CHILD_KINDS = {FailureKind.SYNTAX, FailureKind.CONTRACT, FailureKind.FORWARD, FailureKind.TRAIN_ERROR,
                FailureKind.MEMORY, FailureKind.NAN, FailureKind.CRASHED}


def evaluate(spec: CandidateSpec, data: PreparedData, sandbox: SandboxConfig, *, epochs: int | None = None,
             device: str = "auto", threads: int = 1, seed: int = 0, on_epoch: EpochCallback | None = None,
             owner: str = "nngpt", server: ForkServer | None = None, test: bool = False,
             gpu_memory_fraction: float | None = None) -> EvalResult:
    """Train `spec` on `data` for `epochs` (default: its own) and return what was measured.

    `server`: the caller's fork server (a trainer keeps one); without, a temporary one is started and
    stopped around this call. `test`: also score the test split after the last epoch (final evaluations)."""
    with contextlib.ExitStack() as stack:
        if server is None:
            server = stack.enter_context(ForkServer(owner))
        session = stack.enter_context(Session(spec, data, sandbox, server, epochs=epochs, device=device,
                                              threads=threads, seed=seed, owner=owner, test=test,
                                              gpu_memory_fraction=gpu_memory_fraction))
        while (epoch := session.next_epoch()) is not None:
            features = session.result.features | {"params": session.result.params}
            session.proceed(on_epoch(epoch, features) if on_epoch else True)
    return session.result


class Session:
    """One candidate trained in the sandbox, epoch by epoch. Use as a context manager:

        with Session(spec, data, sandbox, server) as s:
            while (epoch := s.next_epoch()) is not None:
                s.proceed(go=...)
        s.result   # the EvalResult, classified

    Leaving the block early (an exception, a stopped Tune trial) kills the child's whole tree."""

    def __init__(self, spec: CandidateSpec, data: PreparedData, sandbox: SandboxConfig, server: ForkServer, *,
                 epochs: int | None = None, device: str = "auto", threads: int = 1, seed: int = 0,
                 owner: str = "nngpt", test: bool = False, gpu_memory_fraction: float | None = None) -> None:
        self.spec, self.data, self.sandbox, self.server, self.owner = spec, data, sandbox, server, owner
        self.epochs = epochs or spec.hyperparameters.epochs
        self.result = EvalResult(candidate_id=spec.id)
        self.proc: SandboxProcess | None = None
        self.stopped = self.armed = False
        self.protocol_error: str | None = None
        self.mark = 0.0
        info, tf = data.info, spec.transform
        side = (tf.resize, tf.resize) if tf.resize else (info.height, info.width)
        self.job = {
            "prm": spec.hyperparameters.as_prm() | {"epochs": self.epochs},
            "epochs": self.epochs,
            "sample_shape": [info.channels, *side],
            "classes": info.classes,
            "transform": tf.model_dump(),
            "mean": data.mean,
            "std": data.std,
            "data": {"train_x": data.train_x, "train_y": data.train_y, "val_x": data.val_x,
                     "test_x": data.test_x if test else None},
            "device": device,
            "threads": threads,
            "seed": seed,
            "gpu_memory_fraction": gpu_memory_fraction,
        }
        self._messages = None

    def __enter__(self) -> Session:
        self.started = time.monotonic()
        try:
            check_code(self.spec.code, static_safety=self.sandbox.static_check)
        except ParseFailure as failure:
            self.result.failure, self.result.error = failure.kind, failure.diagnostic
            return self
        proc = SandboxProcess(self.job, self.spec.code, self.sandbox, self.server, owner=self.owner)
        try:
            self.proc = proc.__enter__()
        except SandboxUnavailable as err:
            proc.__exit__(None, None, None)
            self.result.failure, self.result.error = FailureKind.CRASHED, str(err)
            return self
        self.mark = time.monotonic()
        self._messages = self.proc.messages(self.sandbox.timeout_s)
        return self

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            exit_info = self.proc.finish(grace_s=5.0 if exc[0] is None else 0.0)
            self.result.protections = dict(self.proc.protections)
            phase = self.proc.phase
            self.proc.__exit__(*exc)
            self.proc = None
            self._classify(exit_info, phase)
        self.result.duration_s = time.monotonic() - self.started

    def next_epoch(self) -> EpochResult | None:
        """Read messages until the next epoch is measured (returned) or the run ends (None)."""
        if self._messages is None:
            return None
        for message in self._messages:
            kind = message.get("t")
            if kind in ("hello", "armed"):  # both sent before any candidate code has run
                if not self.armed:
                    self.proc.protections.update(message.get("protections") or {})
                self.armed = kind == "armed"
            elif kind == "ready":
                self.result.params = message.get("params") if isinstance(message.get("params"), int) else None
                self.result.features = _clean_features(message.get("features"))
                self.mark = time.monotonic()
            elif kind == "epoch":
                epoch = self._epoch(message)
                if epoch is None:
                    break
                return epoch
            elif kind == "test":
                if not self._test(message):
                    break
            elif kind == "error":
                reported = message.get("kind")
                failure = FailureKind(reported) if reported in {k.value for k in _CHILD_KINDS} else FailureKind.CRASHED
                self.result.failure, self.result.error = failure, str(message.get("error"))[:4000]
                break
            elif kind == "done":
                break
            else:
                self.protocol_error = "the candidate process wrote a malformed result message"
                break
        self._messages = None
        return None

    def proceed(self, go: bool = True) -> None:
        """After an epoch: go on to the next one, or stop here (the predictor gate said so)."""
        if self.proc is None or len(self.result.epochs) >= self.epochs:
            return  # after the last epoch the child finishes on its own
        if go:
            self.proc.send("go")
            self.mark = time.monotonic()
        else:
            self.stopped = True
            self.proc.send("stop")
            self._messages = None

    def _epoch(self, message: dict) -> EpochResult | None:
        number, predictions = message.get("epoch"), message.get("pred")
        expected = len(self.result.epochs) + 1
        val_y = self.data.val_y
        if number != expected or not isinstance(predictions, list) or len(predictions) != len(val_y):
            self.protocol_error = f"the candidate process sent an invalid result for epoch {expected}"
            return None
        accuracy = _score(predictions, val_y)
        if accuracy is None:
            self.protocol_error = f"the candidate process sent non-integer predictions in epoch {expected}"
            return None
        loss = message.get("train_loss")
        epoch = EpochResult(
            epoch=expected,
            train_loss=float(loss) if isinstance(loss, (int, float)) and not isinstance(loss, bool) else None,
            val_accuracy=accuracy,
            seconds=round(time.monotonic() - self.mark, 3),
            peak_memory_mb=round(self.proc.peak_rss / 2**20, 1),
        )
        self.result.epochs.append(epoch)
        return epoch

    def _test(self, message: dict) -> bool:
        predictions = message.get("pred")
        if self.job["data"]["test_x"] is None or not isinstance(predictions, list) or \
                len(predictions) != len(self.data.test_y):
            self.protocol_error = "the candidate process sent an invalid test-split result"
            return False
        self.result.test_accuracy = _score(predictions, self.data.test_y)
        return self.result.test_accuracy is not None

    def _classify(self, exit_info: ExitInfo, phase: str) -> None:
        r, sandbox = self.result, self.sandbox
        complete = len(r.epochs) >= self.epochs
        tail = _tail(exit_info.output_tail)
        if r.failure is not None:
            if r.failure == FailureKind.CRASHED or r.failure == FailureKind.TRAIN_ERROR:
                r.error = (r.error or "") + tail
            return
        if exit_info.killed_for == "timeout":
            r.failure, r.error = FailureKind.TIMEOUT, f"ran past its {sandbox.timeout_s:g} s wall-clock limit"
        elif exit_info.killed_for == "stall":
            r.failure, r.error = FailureKind.TIMEOUT, (
                f"stalled: took no new batch and finished no phase for {sandbox.stall_s:g} s "
                f"(last phase: {phase})")
        elif exit_info.killed_for == "memory" or exit_info.cgroup_oom:
            r.failure, r.error = FailureKind.MEMORY, f"went past its memory limit ({sandbox.memory_mb} MB above torch)"
        elif exit_info.killed_for == "disk":
            r.failure, r.error = FailureKind.CRASHED, f"its scratch directory grew past {sandbox.max_scratch_mb} MB"
        elif exit_info.killed_for == "protocol" or self.protocol_error:
            r.failure, r.error = FailureKind.CRASHED, self.protocol_error or "flooded its result channel"
        elif self.stopped:
            r.failure, r.error = FailureKind.STOPPED_EARLY, f"stopped by the predictor after epoch {len(r.epochs)}"
        elif complete:
            return
        elif exit_info.server_lost:
            r.failure, r.error = FailureKind.CRASHED, "its sandbox fork server died while it ran" + tail
        elif exit_info.signal_name == "SIGXCPU":
            r.failure, r.error = FailureKind.TIMEOUT, "ran past its CPU-time limit"
        elif exit_info.signal_name == "SIGXFSZ":
            r.failure, r.error = FailureKind.CRASHED, f"wrote a file larger than {sandbox.max_file_mb} MB"
        elif exit_info.signal_name:
            r.failure, r.error = FailureKind.CRASHED, f"the process died of {exit_info.signal_name}" + tail
        else:
            r.failure = FailureKind.CRASHED
            r.error = f"the process exited (status {exit_info.returncode}) before finishing" + tail


def _clean_features(raw) -> dict:
    """The child's feature report, kept only where it has the expected shape (the child runs untrusted code)."""
    if not isinstance(raw, dict):
        return {}
    out: dict = {}
    if isinstance(raw.get("flops"), int) and raw["flops"] >= 0:
        out["flops"] = raw["flops"]
    if isinstance(raw.get("depth"), int) and raw["depth"] >= 0:
        out["depth"] = raw["depth"]
    layers = raw.get("layers")
    if isinstance(layers, dict):
        out["layers"] = {k: v for k, v in list(layers.items())[:64]
                         if isinstance(k, str) and k.isidentifier() and len(k) <= 48 and isinstance(v, int) and v >= 0}
    return out


def _score(predictions: list, labels: np.ndarray) -> float | None:
    try:
        predicted = np.asarray(predictions, dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        return None
    return float((predicted == labels).mean())


def _tail(output: str, limit: int = 2000) -> str:
    output = output.strip()
    if not output:
        return ""
    return "\n--- output tail ---\n" + output[-limit:]
