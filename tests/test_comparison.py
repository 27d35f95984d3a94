"""What `nngpt compare` reads from a run store, without Ray: the two curves, the budget, the plot."""

from __future__ import annotations

from nngpt_ray import comparison
from nngpt_ray.corpus import seed_entries
from nngpt_ray.failures import FailureKind
from nngpt_ray.spec import CandidateSpec, EpochResult, EvalResult, Hyperparameters, Origin
from nngpt_ray.store import Store


def _search_store(path, results) -> Store:
    """A run store with one candidate sent per entry of `results`, finished in that order: a validation
    accuracy, or a failure kind."""
    store = Store(path, create=True)
    (network,) = seed_entries(["vgg"])
    for i, result in enumerate(results):
        spec = CandidateSpec(code=network.code, dataset="digits", origin=Origin(task="fill"),
                             hyperparameters=Hyperparameters(lr=0.01 * (i + 1), momentum=0.9, batch=32, epochs=1))
        store.add_candidate(spec.id, task="fill", cycle=0, spec=spec)
        attempt = store.start_attempt(spec.id, "t")
        if isinstance(result, FailureKind):
            store.complete(EvalResult(candidate_id=spec.id, failure=result, error="x", duration_s=1.0), attempt)
        else:
            store.complete(EvalResult(candidate_id=spec.id, duration_s=2.0,
                                      epochs=[EpochResult(epoch=1, val_accuracy=result, seconds=2.0)]), attempt)
    return store


def test_the_curve_counts_trained_candidates_and_the_budget_curve_counts_every_one_sent(tmp_path):
    store = _search_store(tmp_path / "s.sqlite", [0.5, FailureKind.FORWARD, 0.7, FailureKind.TIMEOUT, 0.6])
    run = comparison.read_run(store, "tpe", 0)
    assert (run.sent, run.trained, run.best) == (5, 3, 0.7)
    assert run.curve == [0.5, 0.7, 0.7]  # after each trained candidate
    assert run.curve_sent == [0.5, 0.5, 0.7, 0.7, 0.7]  # after each candidate sent: a failure costs budget
    assert run.trainer_seconds == 8.0 and run.llm_seconds == 0


def test_candidates_to_reach_count_the_budget(tmp_path):
    slow = comparison.read_run(_search_store(tmp_path / "a.sqlite", [FailureKind.FORWARD, 0.5, 0.8]), "llm", 0)
    fast = comparison.read_run(_search_store(tmp_path / "b.sqlite", [0.79, 0.4]), "tpe", 0)
    summary = comparison.summarize([slow, fast], "digits", 3, 1)
    assert summary["overall_best"] == 0.8
    assert [r["to_95"] for r in summary["methods"]["llm"]["runs"]] == [3]  # 0.76 first reached at the 3rd sent
    assert [r["to_95"] for r in summary["methods"]["tpe"]["runs"]] == [1]
    assert len(summary["methods"]["llm"]["runs"][0]["curve"]) == 2


def test_a_run_that_trained_nothing_plots_and_summarizes(tmp_path):
    broken = comparison.read_run(_search_store(tmp_path / "a.sqlite", [FailureKind.FORWARD] * 2), "llm", 0)
    ok = comparison.read_run(_search_store(tmp_path / "b.sqlite", [0.6, 0.9]), "random", 0)
    assert (broken.curve, broken.curve_sent, broken.best) == ([], [0.0, 0.0], None)
    summary = comparison.summarize([broken, ok], "digits", 2, 1)
    assert summary["methods"]["llm"]["best_mean"] is None and summary["methods"]["random"]["best_mean"] == 0.9
    png = comparison.plot(summary, tmp_path / "compare.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
