"""Fitted scikit-learn models saved as files: the learned predictor and the suitability classifier.

A file records what wrote it (its kind, format and feature names); loading one written for another
kind or version is a UserError that says how to get a good one, never a model fed misaligned columns.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from nngpt_ray.failures import UserError

FORMAT = 1


def save(path: Path, kind: str, features: tuple[str, ...], payload: dict[str, Any]) -> Path:
    import sklearn

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump({"kind": kind, "format": FORMAT, "features": features, "sklearn": sklearn.__version__,
                     **payload}, f)
    return path


def load(path: Path, kind: str, features: tuple[str, ...], refit: str) -> dict[str, Any]:
    """The saved payload; UserError for a missing file, another kind, or another version (`refit`: the
    command that writes a good one)."""
    try:
        with open(path, "rb") as f:
            saved = pickle.load(f)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ModuleNotFoundError, ImportError) as err:
        raise UserError(f"{path} is not a {kind} model file ({err})") from None
    if not isinstance(saved, dict) or saved.get("kind") != kind:
        found = saved.get("kind") if isinstance(saved, dict) else type(saved).__name__
        raise UserError(f"{path} is not a {kind} model file (it holds {found!r}): write one with `{refit}`")
    if saved.get("format") != FORMAT or tuple(saved.get("features", ())) != features:
        raise UserError(f"{path} was written by another nngpt-ray version (format {saved.get('format')}, "
                        f"{len(saved.get('features', ()))} features; this version reads format {FORMAT} with "
                        f"{len(features)}): fit it again with `{refit}`")
    return saved
