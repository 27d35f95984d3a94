"""LEMUR's layout, both ways: `nngpt export RUN --lemur DIR` and `nngpt import-lemur DIR`.

A LEMUR tree holds `nn/<name>.py` (a network module under the same contract as ours) and
`stat/<task>_<dataset>_<metric>_<name>/<epoch>.json`, each a list of trials: the network's
hyperparameters, `batch`, `transform` (a name such as `norm_128_flip`), `accuracy`, `duration` (ns) and
`uid`, the md5 of `str(prm)` with whitespace removed, prm = the hyperparameters, then batch, then
transform (checked against a record of ABrain-One/nn-dataset in tests/test_lemur.py).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nngpt_ray import outcomes
from nngpt_ray.failures import UserError
from nngpt_ray.parsing import ParseFailure, check_code
from nngpt_ray.spec import CandidateSpec, Transform
from nngpt_ray.store import Store

TASK = "img-classification"
METRIC = "acc"
_TRANSFORM = re.compile(r"^(norm|echo)(?:_(\d+))?(_flip)?$")


def uid(hyperparameters: dict[str, Any], batch: int, transform: str) -> str:
    """LEMUR's trial id: md5 of str(prm) without whitespace; prm = hyperparameters, batch, transform."""
    prm = {**hyperparameters, "batch": batch, "transform": transform}
    return hashlib.md5("".join(str(prm).split()).encode()).hexdigest()


def transform_name(t: Transform) -> str:
    """`norm_32_flip`: normalized (`echo` if not), resized to 32, random horizontal flip."""
    return f"{'norm' if t.normalize else 'echo'}{f'_{t.resize}' if t.resize else ''}{'_flip' if t.hflip else ''}"


def transform_from_name(name: str) -> Transform | None:
    match = _TRANSFORM.match(name)
    if not match:
        return None
    return Transform(normalize=match.group(1) == "norm", resize=int(match.group(2)) if match.group(2) else None,
                     hflip=bool(match.group(3)))


# ---------------------------------------------------------------- export

def run_records(store: Store, threshold: float | None = None) -> tuple[dict[str, str], list[Trial]]:
    """A run's trained networks (accepted ones only, when `threshold` is given) in LEMUR's terms: one name per
    distinct code, one trial per training of it and epoch."""
    where = outcomes.sql_trained() if threshold is None else outcomes.sql_accepted()
    networks: dict[str, str] = {}
    names: dict[str, str] = {}
    trials: list[Trial] = []
    for row in store.db.execute(f"SELECT id, spec FROM candidates WHERE stage='finished' AND {where} "
                                "AND spec IS NOT NULL ORDER BY finished, id", () if threshold is None else (threshold,)):
        spec = CandidateSpec.model_validate_json(row["spec"])
        name = names.setdefault(spec.code, f"nngpt-{spec.id[:12]}")
        networks[name] = spec.code
        hp = {k: v for k, v in spec.hyperparameters.as_prm().items() if k not in ("batch", "epochs")}
        transform = transform_name(spec.transform)
        seconds = 0.0
        for epoch in store.epochs(row["id"]):
            seconds += epoch.seconds or 0.0
            trials.append(Trial(name, spec.dataset, epoch.epoch, epoch.val_accuracy, hp, spec.hyperparameters.batch,
                                transform, int(seconds * 1e9), uid(hp, spec.hyperparameters.batch, transform)))
    return networks, trials


def write_tree(networks: dict[str, str], trials: list[Trial], out: Path) -> dict[str, int]:
    """`out/nn/<name>.py` and `out/stat/img-classification_<dataset>_acc_<name>/<epoch>.json`."""
    (out / "nn").mkdir(parents=True, exist_ok=True)
    (out / "stat").mkdir(exist_ok=True)
    for name, code in networks.items():
        (out / "nn" / f"{name}.py").write_text(code)
    files: dict[Path, list[dict]] = {}
    for t in trials:
        path = out / "stat" / f"{TASK}_{t.dataset}_{METRIC}_{t.network}" / f"{t.epoch}.json"
        files.setdefault(path, []).append({**t.hyperparameters, "accuracy": t.accuracy, "batch": t.batch,
                                           "duration": t.duration_ns, "transform": t.transform, "uid": t.uid})
    for path, rows in files.items():
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(rows, indent=4, sort_keys=True))
    return {"networks": len(networks), "trials": len(trials), "files": len(files)}


def export_run(store: Store, out: Path) -> dict[str, int]:
    """Every trained network of a run, as a LEMUR tree in `out`."""
    return write_tree(*run_records(store), out)


# ---------------------------------------------------------------- import

@dataclass
class Trial:
    network: str
    dataset: str
    epoch: int
    accuracy: float
    hyperparameters: dict[str, float]
    batch: int | None
    transform: str | None
    duration_ns: int | None
    uid: str | None


@dataclass
class LemurTree:
    networks: dict[str, str] = field(default_factory=dict)  # name -> code (contract checked)
    trials: list[Trial] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # kind -> count
    problems: list[str] = field(default_factory=list)  # one line per skipped item

    def skip(self, kind: str, message: str) -> None:
        self.skipped[kind] = self.skipped.get(kind, 0) + 1
        self.problems.append(f"{kind}: {message}")


def read_tree(root: Path) -> LemurTree:
    """Read and check everything; writes nothing. Raises UserError if `root` is not a LEMUR tree."""
    root = Path(root)
    if not (root / "nn").is_dir() and not (root / "stat").is_dir():
        if (root / "ab" / "nn" / "nn").is_dir():  # the nn-dataset repository itself
            root = root / "ab" / "nn"
        else:
            raise UserError(f"{root} is not a LEMUR tree: it has neither nn/ nor stat/")
    tree = LemurTree()
    for path in sorted((root / "nn").glob("*.py")) if (root / "nn").is_dir() else []:
        try:
            code = path.read_text()
            check_code(code, static_safety=True)
        except (OSError, UnicodeDecodeError) as err:
            tree.skip("unreadable", f"{path.name}: {err}")
            continue
        except ParseFailure as failure:
            tree.skip(f"network_{failure.kind}", f"{path.name}: {failure.diagnostic.splitlines()[0]}")
            continue
        tree.networks[path.stem] = code
    for folder in sorted((root / "stat").iterdir()) if (root / "stat").is_dir() else []:
        if not folder.is_dir():
            continue
        parts = folder.name.split("_", 3)
        if len(parts) != 4:
            tree.skip("stat_name", f"{folder.name}: not <task>_<dataset>_<metric>_<name>")
            continue
        task, dataset, metric, name = parts
        if name not in tree.networks:
            tree.skip("no_network", f"{folder.name}: nn/{name}.py is missing or was skipped")
            continue
        for path in sorted(folder.glob("*.json")):
            _read_stat(tree, path, name, dataset, metric)
    return tree


def _read_stat(tree: LemurTree, path: Path, name: str, dataset: str, metric: str) -> None:
    where = f"{path.parent.name}/{path.name}"
    if not path.stem.isdigit():
        tree.skip("stat_name", f"{where}: the file name is not an epoch number")
        return
    try:
        trials = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        tree.skip("stat_unreadable", f"{where}: {err}")
        return
    if not isinstance(trials, list):
        tree.skip("stat_not_a_list", f"{where}: a stat file is a list of trials")
        return
    for i, trial in enumerate(trials):
        if not isinstance(trial, dict):
            tree.skip("trial_not_an_object", f"{where}[{i}]")
            continue
        accuracy = trial.get(metric if metric != METRIC else "accuracy", trial.get("accuracy"))
        if not isinstance(accuracy, (int, float)) or isinstance(accuracy, bool):
            tree.skip("trial_without_accuracy", f"{where}[{i}]")
            continue
        reserved = {"accuracy", "batch", "transform", "duration", "uid"}
        hp = {k: v for k, v in trial.items() if k not in reserved and isinstance(v, (int, float))
              and not isinstance(v, bool)}
        batch = trial.get("batch")
        duration = trial.get("duration")
        tree.trials.append(Trial(name, dataset, int(path.stem), float(accuracy), hp,
                                 batch if isinstance(batch, int) else None,
                                 trial.get("transform") if isinstance(trial.get("transform"), str) else None,
                                 duration if isinstance(duration, int) else None,
                                 trial.get("uid") if isinstance(trial.get("uid"), str) else None))
