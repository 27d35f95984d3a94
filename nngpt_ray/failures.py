"""The closed list of ways a candidate can fail, and the errors a user can cause.

Two different things live here on purpose. `FailureKind` classifies what a *candidate* did; it is
data, stored with every result, and the list is closed so that statistics over runs stay comparable.
`UserError` and its subclasses are what the *user* did wrong (a bad config, an unknown dataset, an
unreadable run directory): the CLI prints their one-line message and exits non-zero, never a traceback.
"""

from __future__ import annotations

from enum import StrEnum


class FailureKind(StrEnum):
    """Why a candidate produced no (complete) result. Closed list: add here, nowhere else."""

    CONTEXT = "context"  # the prompt did not fit the model's context: there is no completion
    PARSE = "parse"  # no code could be extracted from the completion
    SYNTAX = "syntax"  # the code does not parse as Python
    CONTRACT = "contract"  # Net / supported_hyperparameters / method signatures missing or wrong
    UNSAFE = "unsafe"  # refused by the static safety check before anything ran
    FORWARD = "forward"  # the network cannot be built or does not map the input to (batch, classes)
    TRAIN_ERROR = "train_error"  # an exception inside train_setup() or learn()
    TIMEOUT = "timeout"  # past its wall-clock or CPU-time limit
    MEMORY = "memory"  # past its memory limit (address space, cgroup, RSS watchdog, CUDA OOM)
    NAN = "nan"  # training loss or outputs became NaN / infinite
    DUPLICATE = "duplicate"  # same normalized code as an earlier candidate
    NEAR_DUPLICATE = "near_duplicate"  # MinHash-Jaccard similarity above the threshold
    STOPPED_EARLY = "stopped_early"  # the predictor judged it hopeless after some epochs
    CRASHED = "crashed"  # the process died, exited without a result, or broke the protocol


class UserError(Exception):
    """Bad input from the user. `str(err)` is a complete, one-line, actionable message."""


class ConfigError(UserError):
    pass


class DatasetError(UserError):
    pass


class StoreError(UserError):
    pass


class CandidateFileError(UserError):
    pass
