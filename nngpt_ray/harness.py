"""Evaluate one candidate: static checks, then training in a sandbox process, measured by the parent.

The candidate never runs in the caller's interpreter. The parent streams per-epoch results as they
come, scores validation accuracy itself from the child's predictions (the child never sees the
validation labels), and turns every way the run can end into one kind from the closed failure list.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from nngpt_ray.config import SandboxConfig
from nngpt_ray.datasets import PreparedData
from nngpt_ray.failures import FailureKind
from nngpt_ray.parsing import ParseFailure, check_code
from nngpt_ray.sandbox.process import ExitInfo, SandboxProcess
from nngpt_ray.spec import CandidateSpec, EpochResult, EvalResult

EpochCallback = Callable[[EpochResult], bool]  # return False to stop training early
_CHILD_KINDS = {FailureKind.SYNTAX, FailureKind.CONTRACT, FailureKind.FORWARD, FailureKind.TRAIN_ERROR,
                FailureKind.MEMORY, FailureKind.NAN, FailureKind.CRASHED}


def evaluate(spec: CandidateSpec, data: PreparedData, sandbox: SandboxConfig, *, epochs: int | None = None,
             device: str = "auto", threads: int = 1, seed: int = 0,
             on_epoch: EpochCallback | None = None, owner: str = "nngpt") -> EvalResult:
    """Train `spec` on `data` for `epochs` (default: its own) and return what was measured."""
    started = time.monotonic()
    result = EvalResult(candidate_id=spec.id)
    try:
        check_code(spec.code, static_safety=sandbox.static_check)
    except ParseFailure as failure:
        result.failure, result.error = failure.kind, failure.diagnostic
        return result

    epochs = epochs or spec.hyperparameters.epochs
    info, tf = data.info, spec.transform
    side = (tf.resize, tf.resize) if tf.resize else (info.height, info.width)
    job = {
        "prm": spec.hyperparameters.as_prm() | {"epochs": epochs},
        "epochs": epochs,
        "sample_shape": [info.channels, *side],
        "classes": info.classes,
        "transform": tf.model_dump(),
        "mean": data.mean,
        "std": data.std,
        "data": {"train_x": data.train_x, "train_y": data.train_y, "val_x": data.val_x},
        "device": device,
        "threads": threads,
        "seed": seed,
    }
    run = _Run(result, data.val_y, epochs, on_epoch)
    with SandboxProcess(job, spec.code, sandbox, owner=owner) as proc:
        run.mark = time.monotonic()
        for message in proc.messages(sandbox.timeout_s):
            if not run.handle(message, proc):
                break
        exit_info = proc.finish()
        result.protections = dict(proc.protections)
    run.classify(exit_info, sandbox)
    result.duration_s = time.monotonic() - started
    return result


class _Run:
    """Bookkeeping of one sandboxed run: turns child messages into measured epochs."""

    def __init__(self, result: EvalResult, val_y: np.ndarray, epochs: int, on_epoch: EpochCallback | None):
        self.result, self.val_y, self.epochs, self.on_epoch = result, val_y, epochs, on_epoch
        self.mark = 0.0
        self.stopped = False
        self.armed = False
        self.protocol_error: str | None = None

    def handle(self, message: dict, proc: SandboxProcess) -> bool:
        """Process one message; False when nothing more should be read."""
        kind = message.get("t")
        if kind in ("hello", "armed"):  # both sent before any candidate code has run
            if not self.armed:
                proc.protections.update(message.get("protections") or {})
            self.armed = kind == "armed"
        elif kind == "ready":
            self.result.params = message.get("params") if isinstance(message.get("params"), int) else None
            self.mark = time.monotonic()
        elif kind == "epoch":
            return self._epoch(message, proc)
        elif kind == "error":
            reported = message.get("kind")
            failure = FailureKind(reported) if reported in {k.value for k in _CHILD_KINDS} else FailureKind.CRASHED
            self.result.failure, self.result.error = failure, str(message.get("error"))[:4000]
            return False
        elif kind == "done":
            return False
        else:
            self.protocol_error = "the candidate process wrote a malformed result message"
            return False
        return True

    def _epoch(self, message: dict, proc: SandboxProcess) -> bool:
        number, predictions = message.get("epoch"), message.get("pred")
        expected = len(self.result.epochs) + 1
        if number != expected or not isinstance(predictions, list) or len(predictions) != len(self.val_y):
            self.protocol_error = f"the candidate process sent an invalid result for epoch {expected}"
            return False
        try:
            predicted = np.asarray(predictions, dtype=np.int64)
        except (TypeError, ValueError, OverflowError):
            self.protocol_error = f"the candidate process sent non-integer predictions in epoch {expected}"
            return False
        loss = message.get("train_loss")
        now = time.monotonic()
        epoch = EpochResult(
            epoch=expected,
            train_loss=float(loss) if isinstance(loss, (int, float)) and not isinstance(loss, bool) else None,
            val_accuracy=float((predicted == self.val_y).mean()),
            seconds=round(now - self.mark, 3),
            peak_memory_mb=round(proc.peak_rss / 2**20, 1),
        )
        self.result.epochs.append(epoch)
        keep_going = self.on_epoch(epoch) if self.on_epoch else True
        if expected >= self.epochs:
            return True  # the child sends "done" next
        if not keep_going:
            self.stopped = True
            proc.send("stop")
            return False
        proc.send("go")
        self.mark = time.monotonic()
        return True

    def classify(self, exit_info: ExitInfo, sandbox: SandboxConfig) -> None:
        r = self.result
        complete = len(r.epochs) >= self.epochs
        tail = _tail(exit_info.output_tail)
        if r.failure is not None:
            if r.failure == FailureKind.CRASHED or r.failure == FailureKind.TRAIN_ERROR:
                r.error = (r.error or "") + tail
            return
        if exit_info.killed_for == "timeout":
            r.failure, r.error = FailureKind.TIMEOUT, f"ran past its {sandbox.timeout_s:g} s wall-clock limit"
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
        elif exit_info.signal_name == "SIGXCPU":
            r.failure, r.error = FailureKind.TIMEOUT, "ran past its CPU-time limit"
        elif exit_info.signal_name == "SIGXFSZ":
            r.failure, r.error = FailureKind.CRASHED, f"wrote a file larger than {sandbox.max_file_mb} MB"
        elif exit_info.signal_name:
            r.failure, r.error = FailureKind.CRASHED, f"the process died of {exit_info.signal_name}" + tail
        else:
            r.failure = FailureKind.CRASHED
            r.error = f"the process exited (status {exit_info.returncode}) before finishing" + tail


def _tail(output: str, limit: int = 2000) -> str:
    output = output.strip()
    if not output:
        return ""
    return "\n--- output tail ---\n" + output[-limit:]
