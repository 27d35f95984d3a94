"""The run's metrics for the Ray dashboard, with `ray.util.metrics` (exported with a `ray_` prefix on each
node's metrics export port; the dashboard's Metrics view shows them once Prometheus and Grafana are set up
as Ray documents). Best effort: a metric that cannot be created or recorded never stops the run; it is
said once, and that metric is off.

    ray_nngpt_candidates_total{stage, kind, adapter, method}   generated, valid, unique, trained, failed
                                                               (counters get Ray's `_total` suffix)
    ray_nngpt_candidate_seconds{status}                        sandboxed training time per candidate
    ray_nngpt_llm_request_seconds, ray_nngpt_llm_tokens_total  generation requests, in the LLM replicas
    ray_nngpt_learner_loss{adapter}, ray_nngpt_update_seconds   the learner's last update
    ray_nngpt_queue_depth, ray_nngpt_trainer_busy_fraction, ray_nngpt_best_accuracy,
    ray_nngpt_mean_accuracy, ray_nngpt_active_adapter, ray_nngpt_cycle         the driver, every few seconds

Every metric carries the run's name as the `run` tag.
"""

from __future__ import annotations

import logging

logger = logging.getLogger("nngpt.metrics")
_warned: set[str] = set()
_cache: dict[str, object] = {}

CANDIDATES = ("nngpt_candidates", "candidates by what became of them", ("stage", "kind", "adapter", "method"))
SECONDS_BOUNDS = [1, 2, 5, 10, 30, 60, 120, 300, 600, 1800]


class _Off:
    def inc(self, *a, **k) -> None: ...
    def set(self, *a, **k) -> None: ...
    def observe(self, *a, **k) -> None: ...


def _metric(metric_type: str, name: str, description: str, tags: tuple[str, ...], **extra):
    if name in _cache:
        return _cache[name]
    try:
        from ray.util import metrics

        cls = {"counter": metrics.Counter, "gauge": metrics.Gauge, "histogram": metrics.Histogram}[metric_type]
        metric = cls(name, description=description, tag_keys=("run", *tags), **extra)
    except Exception as err:  # metrics are best effort
        _say_once(name, err)
        metric = _Off()
    _cache[name] = metric
    return metric


def _say_once(name: str, err: Exception) -> None:
    if name not in _warned:
        _warned.add(name)
        logger.warning("metric %s is off: %s", name, err)


def record(metric_type: str, name: str, description: str, value: float, run: str, **tags) -> None:
    """Increment a counter, set a gauge or observe a histogram value; never raises."""
    try:
        extra = {"boundaries": SECONDS_BOUNDS} if metric_type == "histogram" else {}
        metric = _metric(metric_type, name, description, tuple(sorted(tags)), **extra)
        method = {"counter": "inc", "gauge": "set", "histogram": "observe"}[metric_type]
        getattr(metric, method)(value, tags={"run": run, **{k: str(v) for k, v in tags.items()}})
    except Exception as err:  # metrics are best effort: the run goes on
        _say_once(name, err)


def candidate(run: str, stage: str, adapter: int, method: str, kind: str = "") -> None:
    name, description, _ = CANDIDATES
    record("counter", name, description, 1.0, run, stage=stage, kind=kind, adapter=adapter, method=method)


def gauges(run: str, values: dict[str, float | None]) -> None:
    for name, value in values.items():
        if value is not None:
            record("gauge", f"nngpt_{name}", name.replace("_", " "), float(value), run)
