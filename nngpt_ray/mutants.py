"""Variants of the seed networks that build and run: the embedded model's training material.

Mutations come from `surgery`; whether a mutant is a network at all is decided by building it and
running one forward pass, in a separate process (`sandbox/shapecheck.py`), never here.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from nngpt_ray.corpus import CorpusEntry
from nngpt_ray.source import code_hash
from nngpt_ray.surgery import NoFillRegion, mutate_region, split

SHAPECHECK = Path(__file__).parent / "sandbox" / "shapecheck.py"


def shape_check(codes: list[str], prms: list[dict], in_shape: tuple[int, int, int, int], classes: int,
                max_params: int = 2_000_000, timeout_s: float = 600) -> list[dict]:
    """Build each network and run a forward pass, in one child process per core. One answer per code."""
    return in_parallel(len(codes), max(1, min(os.cpu_count() or 1, len(codes) // 20)),
                       lambda idx: _shape_check_process([codes[i] for i in idx], [prms[i] for i in idx], in_shape,
                                                        classes, max_params, timeout_s))


def in_parallel(n: int, workers: int, run: Callable[[list[int]], list]) -> list:
    """`run` on the indices 0..n-1 split into `workers` strided chunks, each in its own thread (each chunk
    runs its own check process); one answer per index, in index order."""
    chunks = [list(range(n))[i::workers] for i in range(workers)]
    with ThreadPoolExecutor(workers) as pool:
        answers = list(pool.map(run, chunks))
    merged: list = [None] * n
    for indices, chunk_answers in zip(chunks, answers, strict=True):
        for i, answer in zip(indices, chunk_answers, strict=True):
            merged[i] = answer
    return merged


def _shape_check_process(codes, prms, in_shape, classes, max_params, timeout_s) -> list[dict]:
    request = {"items": [{"code": c, "prm": p} for c, p in zip(codes, prms, strict=True)],
               "in_shape": list(in_shape), "classes": classes, "max_params": max_params, "cpu_s": int(timeout_s)}
    proc = subprocess.run([sys.executable, "-I", "-B", str(SHAPECHECK)], input=json.dumps(request),
                          capture_output=True, text=True, timeout=timeout_s, env={"PATH": "/usr/bin:/bin",
                                                                                   "OMP_NUM_THREADS": "1"})
    if proc.returncode != 0:
        raise RuntimeError(f"shape check process failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


def valid_mutants(seeds: list[CorpusEntry], rng: random.Random, attempts: int, keep: int,
                  in_shape: tuple[int, int, int, int] = (2, 1, 8, 8), classes: int = 10) -> dict[str, list[str]]:
    """Fill regions of up to `keep` distinct mutants per seed that build and map `in_shape` to
    (batch, classes). All seeds go through one shape check, so torch starts once per core, not per seed."""
    pending: list[tuple[str, str, str]] = []  # (seed name, code, region)
    for seed in seeds:
        try:
            parts = split(seed.code)
        except NoFillRegion:
            continue
        seen = {code_hash(seed.code)}
        for _ in range(attempts):
            region = mutate_region(parts.region, rng, steps=rng.choice((1, 1, 2, 3)))
            code = parts.before + region + parts.after
            h = code_hash(code)
            if h not in seen:
                seen.add(h)
                pending.append((seed.name, code, region))
    prm = {"lr": 0.01, "momentum": 0.9, "dropout": 0.1, "batch": in_shape[0], "epochs": 1}
    answers = shape_check([c for _, c, _ in pending], [prm] * len(pending), in_shape, classes)
    out: dict[str, list[str]] = {seed.name: [] for seed in seeds}
    for (name, _, region), answer in zip(pending, answers, strict=True):
        if answer["ok"] and len(out[name]) < keep:
            out[name].append(region)
    return out
