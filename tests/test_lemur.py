"""LEMUR import and export: the uid LEMUR computes, a round trip through the layout, bad trees."""

from __future__ import annotations

import json

import pytest

from conftest import DATA, run_cli
from nngpt_ray.config import Config
from nngpt_ray.corpus import CorpusStore, seed_entries, stored_entries
from nngpt_ray.failures import UserError
from nngpt_ray.lemur import export_run, read_tree, transform_from_name, transform_name, uid
from nngpt_ray.spec import CandidateSpec, EpochResult, EvalResult, Hyperparameters, Origin, Transform
from nngpt_ray.store import Store


def test_uid_is_computed_as_lemur_computes_it():
    """First trial of ABrain-One/nn-dataset ab/nn/stat/img-classification_celeba-gender_acc_ga-32/1.json."""
    hyperparameters = {"momentum": 0.5103205404742006, "dropout": 0.4168182706720874, "lr": 0.15319899090209418}
    assert uid(hyperparameters, 256, "echo_32") == "4c35925a0b67b58cea2c0a614569ec70"


@pytest.mark.parametrize("name", ["norm", "echo_32", "norm_299", "norm_128_flip", "echo_32_flip"])
def test_transform_names_round_trip(name):
    assert transform_name(transform_from_name(name)) == name


def _run_store(path, dataset="digits") -> tuple[Store, dict[str, list[float]]]:
    """A run store with three trainings of two real networks (one trained twice with other settings)."""
    store = Store(path, create=True)
    resnet, vgg = seed_entries(["resnet", "vgg"])
    curves = {}
    for network, hp, accs in ((resnet, {"lr": 0.05, "momentum": 0.9, "batch": 32}, [0.61, 0.82]),
                              (resnet, {"lr": 0.01, "momentum": 0.5, "batch": 64}, [0.41, 0.55]),
                              (vgg, {"lr": 0.02, "momentum": 0.8, "batch": 16, "dropout": 0.2}, [0.7, 0.9])):
        spec = CandidateSpec(code=network.code, dataset=dataset, hyperparameters=Hyperparameters(**hp, epochs=2),
                             transform=Transform(resize=16, hflip=True), origin=Origin(task="fill"))
        store.add_candidate(spec.id, task="fill", cycle=0, spec=spec)
        attempt = store.start_attempt(spec.id, "t")
        store.complete(EvalResult(candidate_id=spec.id, epochs=[
            EpochResult(epoch=i + 1, val_accuracy=a, seconds=2.0) for i, a in enumerate(accs)]), attempt)
        curves[spec.id] = accs
    return store, curves


def test_export_then_import_gives_the_same_networks_and_accuracies(tmp_path):
    store, curves = _run_store(tmp_path / "store.sqlite")
    counts = export_run(store, tmp_path / "lemur")
    assert counts == {"networks": 2, "trials": 6, "files": 4}
    stat = sorted((tmp_path / "lemur" / "stat").iterdir())
    assert all(p.name.startswith("img-classification_digits_acc_nngpt-") for p in stat)
    trial = json.loads((stat[0] / "1.json").read_text())[0]
    assert set(trial) >= {"accuracy", "batch", "duration", "lr", "momentum", "transform", "uid"}
    assert trial["transform"] == "norm_16_flip" and trial["duration"] == 2_000_000_000

    tree = read_tree(tmp_path / "lemur")
    assert not tree.skipped
    with CorpusStore(tmp_path / "corpus") as corpus:
        assert corpus.add(tree.networks, tree.trials, origin="test") == {"networks": 2, "trials": 6}
        assert corpus.add(tree.networks, tree.trials, origin="test")["trials"] == 0  # a second import adds nothing
        networks = corpus.networks()
        assert sorted(networks.values()) == sorted({e.code for e in seed_entries(["resnet", "vgg"])})
        imported = sorted(sorted(r["accuracy"] for r in corpus.results(name)) for name in networks)
    assert imported == sorted(sorted(a for cid, accs in curves.items() for a in accs if _code(store, cid) == code)
                              for code in networks.values())
    # each trial keeps LEMUR's uid, computed at export from the network's hyperparameters in their own order
    # (the files list keys sorted, as LEMUR's do, so the order is not recoverable from a file)
    expected = set()
    for candidate_id in curves:
        spec = store.spec(candidate_id)
        hp = {k: v for k, v in spec.hyperparameters.as_prm().items() if k not in ("batch", "epochs")}
        expected.add(uid(hp, spec.hyperparameters.batch, "norm_16_flip"))
    assert {t.uid for t in tree.trials} == expected and len(expected) == 3
    store.close()


def _code(store: Store, candidate_id: str) -> str:
    return store.spec(candidate_id).code


def test_imported_networks_are_references_of_the_next_run(tmp_path):
    store, _ = _run_store(tmp_path / "store.sqlite")
    export_run(store, tmp_path / "lemur")
    store.close()
    proc = run_cli("import-lemur", str(tmp_path / "lemur"), "--corpus", str(tmp_path / "corpus"), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["networks"] == 2
    cfg = Config.model_validate({"corpus": {"path": str(tmp_path / "corpus")}, "data": {"dataset": "digits"}})
    entries = stored_entries(cfg)
    assert [e.accuracy for e in entries] == [0.9, 0.82]  # best result per network, best network first
    assert {e.family for e in entries} == {"resnet", "vgg"}
    assert entries[0].hyperparameters == {"lr": 0.02, "momentum": 0.8, "dropout": 0.2, "batch": 16}
    assert stored_entries(Config()) == []


def test_bad_items_are_classified_and_counted_and_nothing_half_imported(tmp_path):
    tree = tmp_path / "tree"
    (tree / "nn").mkdir(parents=True)
    (tree / "nn" / "good.py").write_text((DATA / "lemur_convbn.py").read_text())
    (tree / "nn" / "broken.py").write_text("import torch\nclass Model: pass\n")
    stat = tree / "stat"
    for name, files in {"good": {"1.json": [{"accuracy": 0.5, "lr": 0.1, "batch": 4, "transform": "norm"},
                                            {"lr": 0.1}],
                                 "2.json": {"not": "a list"}, "x.json": []},
                        "broken": {"1.json": [{"accuracy": 0.3}]},
                        "missing": {"1.json": [{"accuracy": 0.3}]}}.items():
        folder = stat / f"img-classification_cifar-10_acc_{name}"
        folder.mkdir(parents=True)
        for file, content in files.items():
            (folder / file).write_text(json.dumps(content))
    (stat / "img-classification_cifar-10_acc_good" / "3.json").write_text("[{not json")
    proc = run_cli("import-lemur", str(tree), "--corpus", str(tmp_path / "corpus"), "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["networks"] == 1 and summary["trials"] == 1
    assert summary["skipped"] == {"network_contract": 1, "no_network": 2, "stat_not_a_list": 1, "stat_name": 1,
                                  "stat_unreadable": 1, "trial_without_accuracy": 1}
    with CorpusStore(tmp_path / "corpus") as corpus:
        assert list(corpus.networks()) == ["good"] and len(corpus.results("good")) == 1

    not_a_tree = run_cli("import-lemur", str(tmp_path / "corpus"), "--corpus", str(tmp_path / "c2"))
    assert not_a_tree.returncode == 2 and "is not a LEMUR tree" in not_a_tree.stderr
    assert "Traceback" not in not_a_tree.stderr
    with pytest.raises(UserError, match="LEMUR tree"):
        read_tree(tmp_path / "nowhere")


def test_a_failing_write_leaves_the_corpus_as_it_was(tmp_path):
    tree = read_tree(_exported(tmp_path))
    with CorpusStore(tmp_path / "corpus") as corpus:
        broken = tree.trials + [tree.trials[0].__class__(**{**tree.trials[0].__dict__, "network": None})]
        with pytest.raises(Exception):
            corpus.add(tree.networks, broken, origin="test")
        assert corpus.networks() == {} and all(not corpus.results(n) for n in tree.networks)


def _exported(tmp_path):
    store, _ = _run_store(tmp_path / "store.sqlite")
    export_run(store, tmp_path / "lemur")
    store.close()
    return tmp_path / "lemur"
