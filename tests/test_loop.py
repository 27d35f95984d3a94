"""A short end-to-end run of the closed loop on real local Ray, with a tiny model built by the bootstrap
code path: generation, parsing, dedup, sandboxed training, early-stop gate, LoRA update, adapter switch."""

from __future__ import annotations

import json

import pytest

from conftest import METRICS_PORT, run_cli, tiny_loop_settings
from nngpt_ray import outcomes
from nngpt_ray.config import Config
from nngpt_ray.corpus import CorpusStore, seed_entries
from nngpt_ray.rundir import RunDir
from nngpt_ray.store import Store


@pytest.fixture(scope="module")
def finished_run(ray_session, tiny_model, tmp_path_factory):
    from nngpt_ray.actors.driver import execute

    out = tmp_path_factory.mktemp("runs")
    corpus = _imported_corpus(out / "corpus")
    cfg = Config.model_validate({
        "run": {"out_dir": str(out), "name": "e2e"},
        "corpus": {"path": str(corpus)},
        **tiny_loop_settings(tiny_model),
        "train": {"epochs": 1},
        "trainers": {"count": 2},
        "learner": {"every_k": 2, "accept_threshold": 0.3, "epochs": 2, "batch_size": 4, "gate_prompts": 0},
        "loop": {"cycles": 2, "candidates_per_cycle": 10, "queue_size": 2, "max_generations_per_cycle": 60},
        "sandbox": {"timeout_s": 120},
    })
    run = RunDir.new(cfg.run.out_dir, cfg.run.name)
    run.config.write_text(cfg.to_yaml())
    scraper = Scraper()
    scraper.start()
    outcome = execute(cfg, run)
    scraper.stop()
    assert outcome.ended == "done", outcome.error
    return run, outcome.summary, scraper.lines


IMPORTED = "imported-cnn"


def _imported_corpus(folder):
    """A lasting corpus holding one network imported from a LEMUR tree (a seed with its own name and a
    recorded accuracy above every seed's), as `nngpt import-lemur` leaves it."""
    tree = folder.parent / "lemur"
    (tree / "nn").mkdir(parents=True)
    code = seed_entries(["plain_cnn"])[0].code.replace('"""', '"""Imported from LEMUR. ', 1)
    (tree / "nn" / f"{IMPORTED}.py").write_text(code)
    stat = tree / "stat" / f"img-classification_digits_acc_{IMPORTED}"
    stat.mkdir(parents=True)
    (stat / "1.json").write_text(json.dumps([{"accuracy": 0.97, "batch": 32, "lr": 0.05, "momentum": 0.9,
                                              "transform": "norm", "uid": "0"}]))
    proc = run_cli("import-lemur", str(tree), "--corpus", str(folder))
    assert proc.returncode == 0, proc.stderr
    return folder


class Scraper:
    """What Prometheus would do: read the node's metrics export port every two seconds during the run."""

    def __init__(self) -> None:
        import threading

        self.lines: set[str] = set()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.scrape, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.done.set()
        self.thread.join()

    def scrape(self) -> None:
        import urllib.request

        while not self.done.wait(2.0):
            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=10).read().decode()
            except OSError:
                continue
            self.lines.update(line for line in text.splitlines() if 'run="e2e"' in line)


def test_cycles_candidates_and_adapters_are_recorded(finished_run):
    run, summary, _ = finished_run
    cycles = summary["cycles"]
    assert [c["cycle"] for c in cycles] == [0, 1]
    assert all(c["generated"] >= 10 for c in cycles)
    assert summary["totals"]["trained"] >= 2
    assert summary["totals"]["trained_twice"] == 0
    assert summary["run"]["adapters_applied"] >= 1
    assert cycles[0]["adapter"] == 0 and cycles[1]["adapter"] == 1  # cycle 1 generated with adapter v1
    store = Store(run.store, readonly=True)
    adapters = store.adapters()
    assert adapters[0]["activated"] is not None and (run.adapter(1) / "adapter_config.json").exists()
    rows = store.table("candidates")
    assert {r["adapter"] for r in rows if r["cycle"] == 1} == {1}
    trained = [r for r in rows if r["status"] in ("ok", "stopped_early")]
    assert len(trained) == summary["totals"]["trained"]
    for r in trained:
        assert (run.networks / f"{r['id']}.py").read_text() == r["code"]
        assert r["best_accuracy"] == max(e.val_accuracy for e in store.epochs(r["id"]))
        assert [a["outcome"] for a in store.attempts(r["id"])] == ["completed"]


def test_every_generation_is_classified(finished_run):
    run, _, _ = finished_run
    rows = Store(run.store, readonly=True).table("candidates")
    allowed = {"ok", "parse", "syntax", "contract", "unsafe", "forward", "train_error", "timeout", "memory", "nan",
               "duplicate", "near_duplicate", "stopped_early", "crashed"}
    assert rows and all(r["stage"] == "finished" and r["status"] in allowed for r in rows)
    for r in rows:
        if r["status"] in ("duplicate", "near_duplicate"):
            assert r["similar_to"] and r["similarity"] is not None


def test_status_command_matches_the_run(finished_run):
    run, summary, _ = finished_run
    proc = run_cli("status", str(run.root), "--json")
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout)
    assert status["cycles"] == summary["cycles"] and status["totals"] == summary["totals"]
    table = run_cli("status", str(run.root))
    assert "trained twice: 0" in table.stdout


def test_the_final_networks_are_scored_once_on_the_test_split(finished_run):
    run, summary, _ = finished_run
    store = Store(run.store, readonly=True)
    best = [r["id"] for r in store.best("digits", 3)]
    tests = store.tests()
    assert sorted(t["candidate_id"] for t in tests) == sorted(best) and len(tests) == 3
    assert all(t["split"] == "test" and 0 < t["accuracy"] <= 1 for t in tests)
    assert summary["splits"]["accuracy_split"] == "validation" and summary["splits"]["test"] == 360
    # nothing else in the run came from the test split: every stored accuracy is a validation epoch
    for r in store.table("candidates"):
        if r["best_accuracy"] is not None:
            assert r["best_accuracy"] == max(e.val_accuracy for e in store.epochs(r["id"]))


def test_the_run_is_visible_in_ray_metrics(finished_run):
    """The actors' and the driver's metrics reached the node's metrics export port while the run went."""
    _, summary, lines = finished_run
    wanted = {"ray_nngpt_candidates_total": 'stage="generated"', "ray_nngpt_candidates_total ": 'stage="trained"',
              "ray_nngpt_candidate_seconds_bucket": "", "ray_nngpt_llm_request_seconds_bucket": "",
              "ray_nngpt_llm_tokens_total": "", "ray_nngpt_learner_loss": "", "ray_nngpt_trainer_busy_fraction": "",
              "ray_nngpt_active_adapter": "", "ray_nngpt_queue_depth": ""}
    missing = sorted(k for k, v in wanted.items() if not any(line.startswith(k.strip() + "{") and v in line
                                                               for line in lines))
    assert not missing, f"not exported: {missing}"
    generated = max(float(line.rsplit(" ", 1)[1]) for line in lines
                    if line.startswith("ray_nngpt_candidates_total{") and 'stage="generated"' in line)
    assert generated >= 1 and generated <= summary["totals"]["generated"]


def test_the_report_page_and_every_figure_it_shows(finished_run, tmp_path):
    import re

    run, _, _ = finished_run
    proc = run_cli("report", str(run.root), str(run.root), "--out", str(tmp_path / "page"))
    assert proc.returncode == 0, proc.stderr
    page = (tmp_path / "page" / "index.html").read_text()
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert len(sources) == 6 and "http" not in page.replace("<!doctype html>", "")  # nothing from the network
    for source in sources:
        figure = tmp_path / "page" / source
        assert figure.stat().st_size > 5000 and figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = run_cli("report", str(tmp_path))
    assert bad.returncode == 2 and "no store.sqlite" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_an_imported_lemur_network_is_a_reference_and_the_run_adds_to_the_corpus(finished_run):
    run, summary, _ = finished_run
    with Store(run.store, readonly=True) as store:
        parents = [json.loads(r["parents"]) for r in store.db.execute("SELECT parents FROM prompts")]
        accepted = store.db.execute("SELECT COUNT(DISTINCT code_hash) FROM candidates WHERE stage='finished' "
                                    f"AND {outcomes.sql_accepted()}", (0.3,)).fetchone()[0]
    assert any(f"corpus:{IMPORTED}" in p for p in parents), "the imported network was never a prompt's reference"
    assert summary["corpus"]["networks"] == accepted > 0
    with CorpusStore(summary["corpus"]["path"]) as corpus:
        assert IMPORTED in corpus.networks() and len(corpus.networks()) == 1 + accepted
