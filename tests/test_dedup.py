"""Dedup verdicts: exact duplicates, near-duplicates, new networks; rebuilt memory."""

from __future__ import annotations

from nngpt_ray.corpus import seed_entries
from nngpt_ray.dedup import Deduplicator

SEEDS = {s.name: s.code for s in seed_entries()}


def test_exact_duplicate_ignores_comments_and_formatting():
    d = Deduplicator(threshold=0.9)
    assert d.check("a", SEEDS["resnet"]).kind == "new"
    reformatted = "# a comment\n" + SEEDS["resnet"].replace("    return {'lr', 'momentum'}", "    return {'lr',   'momentum'}  # hp")
    v = d.check("b", reformatted)
    assert (v.kind, v.similar_to, v.similarity) == ("duplicate", "a", 1.0)


def test_near_duplicate_names_the_original_and_its_similarity():
    d = Deduplicator(threshold=0.9)
    d.check("a", SEEDS["resnet"])
    tweak = SEEDS["resnet"].replace("nn.Linear(c3, out_shape[0])", "nn.Linear(c3, out_shape[0], bias=True)")
    assert tweak != SEEDS["resnet"]
    v = d.check("b", tweak)
    assert v.kind == "near_duplicate" and v.similar_to == "a" and 0.9 <= v.similarity < 1.0


def test_new_network_names_its_nearest_neighbour():
    d = Deduplicator(threshold=0.9)
    d.check("resnet", SEEDS["resnet"])
    d.check("vit", SEEDS["vit"])
    v = d.check("senet", SEEDS["senet"])
    assert v.kind == "new"
    assert v.similar_to == "resnet" and 0 < v.similarity < 0.9  # SE-ResNet is closest to ResNet
    assert len(d) == 3


def test_remember_rebuilds_the_same_memory():
    first = Deduplicator()
    for name, code in SEEDS.items():
        first.check(name, code)
    second = Deduplicator()
    for name, code in SEEDS.items():
        second.remember(name, code)
    assert second.ids == first.ids
    assert second.check("x", SEEDS["vgg"]).kind == "duplicate"
