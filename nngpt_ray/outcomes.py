"""What each word in a report means, defined once. The loop, the store's SQL, `nngpt status`, the
learner and the benchmarks all use these, so a live count and a stored one can never disagree.

A candidate's final status is "ok" or a `FailureKind`. From it:

- **valid**: a working network. It parsed, met the module contract, passed the static safety check
  and, once it ran, could be built and mapped the input to (batch, classes). The last part is known only
  after the sandbox tried, so a candidate that fails with `forward` is invalid from then on.
  Duplicates are valid (they are working networks, just not new ones).
- **unique**: valid and judged new by dedup.
- **sent to training**: judged new at admission (a cycle's quota counts these); some later turn out
  invalid (`forward`), so unique <= sent.
- **trained**: it finished at least one epoch and ended "ok" or "stopped_early": its validation
  accuracies are a real measurement of a working network. A candidate that trained an epoch and then
  failed (timeout, nan, memory, train_error, crashed) keeps its epochs as data but is not trained.
- **accepted**: trained, with a best validation accuracy at or above the learner's threshold.
"""

from __future__ import annotations

from nngpt_ray.failures import FailureKind

NEVER_RAN = frozenset({FailureKind.CONTEXT, FailureKind.PARSE, FailureKind.SYNTAX, FailureKind.CONTRACT,
                       FailureKind.UNSAFE})
INVALID = NEVER_RAN | {FailureKind.FORWARD}
DUPLICATES = frozenset({FailureKind.DUPLICATE, FailureKind.NEAR_DUPLICATE})
TRAINED = frozenset({"ok", FailureKind.STOPPED_EARLY.value})


def is_valid(status: str | None) -> bool:
    return status not in _values(INVALID)


def is_unique(status: str | None) -> bool:
    return is_valid(status) and status not in _values(DUPLICATES)


def is_trained(status: str | None) -> bool:
    return status in TRAINED


def is_accepted(status: str | None, best_accuracy: float | None, threshold: float) -> bool:
    return is_trained(status) and best_accuracy is not None and best_accuracy >= threshold


# ---------------------------------------------------------------- the same, as SQL over `candidates`

def sql_valid(column: str = "status") -> str:
    return f"COALESCE({column}, '') NOT IN ({_sql_list(INVALID)})"


def sql_unique(column: str = "status") -> str:
    return f"COALESCE({column}, '') NOT IN ({_sql_list(INVALID | DUPLICATES)})"


def sql_sent_to_training(column: str = "status") -> str:
    """Admitted as new: not refused before running, not a duplicate (still queued or running counts)."""
    return f"COALESCE({column}, '') NOT IN ({_sql_list(NEVER_RAN | DUPLICATES)})"


def sql_trained(column: str = "status") -> str:
    return f"COALESCE({column}, '') IN ({_sql_list(TRAINED)})"


def sql_accepted(status: str = "status", best: str = "best_accuracy", threshold: str = "?") -> str:
    return f"({sql_trained(status)} AND {best} >= {threshold})"


def _values(kinds) -> set[str]:
    return {k.value if isinstance(k, FailureKind) else k for k in kinds}


def _sql_list(kinds) -> str:
    return ", ".join(f"'{v}'" for v in sorted(_values(kinds)))
