"""NN-RAG block extraction: real libcst closures of the installed torchvision, validated in confined
processes in which torchvision cannot be imported."""

from __future__ import annotations

import json
import re
import sqlite3

import pytest

from nngpt_ray import rag
from nngpt_ray.failures import UserError

from conftest import run_cli

TORCHVISION_IMPORT = re.compile(r"^\s*(import|from)\s+torchvision\b", re.M)


@pytest.fixture(scope="module")
def store(rag_build):
    """The whole of torchvision, as `nngpt rag build --sources torchvision --json` does it (started with the
    session, conftest.rag_build)."""
    proc = rag_build.result(timeout=1200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return rag_build.out / "store", json.loads(proc.stdout.strip().splitlines()[-1])


def test_every_module_class_is_a_target_and_every_target_is_accounted_for(store):
    out, summary = store
    assert set(summary) >= {"targets", "extracted", "valid", "rate", "by_source", "failures", "unimportable_modules"}
    assert all(m.startswith("torchvision.") and why for m, why in summary["unimportable_modules"].items())
    with sqlite3.connect(out / "blocks.sqlite") as db:
        rows = db.execute("SELECT target, status, kind FROM blocks").fetchall()
    assert len(rows) == summary["targets"] == summary["by_source"]["torchvision"]["targets"]
    assert {"torchvision.models.resnet.BasicBlock", "torchvision.ops.misc.Conv2dNormActivation"} <= {r[0] for r in rows}
    invalid = [r for r in rows if r[1] != "valid"]
    assert len(invalid) == sum(summary["failures"].values()) == summary["targets"] - summary["valid"]
    assert all(kind in rag.EXTRACTION_KINDS + rag.VALIDATION_KINDS for _, _, kind in invalid)
    assert summary["rate"] == pytest.approx(summary["valid"] / summary["targets"], abs=1e-4)


def test_valid_blocks_are_standalone_and_ran_where_torchvision_cannot_be_imported(store):
    out, summary = store
    blocks = rag.valid_blocks(out)
    assert len(blocks) == summary["valid"] > 0
    resnet_block = next(b for b in blocks if b.target == "torchvision.models.resnet.BasicBlock")
    assert resnet_block.init_kwargs["args"] or resnet_block.init_kwargs["kwargs"]
    assert len(resnet_block.input_shape[0]["tensor"]) == 4
    for block in blocks:
        assert not TORCHVISION_IMPORT.search(block.code), block.target
    # The validating interpreter really refuses torchvision: the same check on a block that imports it fails.
    leaky = blocks[0].code.replace("from __future__ import annotations",
                                   "from __future__ import annotations\nimport torchvision", 1)
    answer, = rag.validate([{"code": leaky, "tries": [blocks[0].init_kwargs]}], blocked=["torchvision"])
    assert answer["ok"] is False and answer["kind"] == "import" and "torchvision" in answer["error"]
    # ... and the unmodified block passes it again in a fresh process.
    again, = rag.validate([{"code": blocks[0].code, "tries": [blocks[0].init_kwargs]}], blocked=["torchvision"])
    assert again["ok"], again


def test_at_least_80_percent_of_torchvision_is_valid(store):
    _, summary = store
    assert summary["rate"] >= 0.8, summary


def test_modules_are_built_and_called_as_the_library_itself_does(store):
    """Constructor arguments and inputs recorded from torchvision's own model builders (on the meta device):
    ResNet gets its block class, FasterRCNN a whole backbone (whose definitions are copied into the block),
    the Swin block its channels-last input, FasterRCNN a list of images."""
    out, _ = store
    blocks = {b.target: b for b in rag.valid_blocks(out)}
    resnet = blocks["torchvision.models.resnet.ResNet"]
    assert resnet.init_kwargs["args"][0] in ({"ref": "BasicBlock"}, {"ref": "Bottleneck"})
    detector = blocks["torchvision.models.detection.faster_rcnn.FasterRCNN"]
    backbone = detector.init_kwargs["args"][0]
    assert backbone["ref"] == "BackboneWithFPN" and "class BackboneWithFPN" in detector.code
    images, = detector.input_shape
    assert isinstance(images, list) and len(images[0]["tensor"]) == 3
    swin = blocks["torchvision.models.swin_transformer.SwinTransformerBlock"]
    n, h, w, c = swin.input_shape[0]["tensor"]
    assert c == swin.init_kwargs["args"][0] and h == w > c // 10  # (batch, height, width, channels)


def test_compiled_ops_become_plain_pytorch_or_a_classified_failure(store):
    """nms is rewritten in plain PyTorch (and agrees with torchvision's compiled op); roi_align takes
    torchvision's own pure-PyTorch path; ops without one fail as `native_op`."""
    import torch
    import torchvision

    out, _ = store
    with sqlite3.connect(out / "blocks.sqlite") as db:
        kinds = dict(db.execute("SELECT target, coalesce(kind, status) FROM blocks").fetchall())
    assert kinds["torchvision.ops.deform_conv.DeformConv2d"] == "native_op"
    assert kinds["torchvision.models.detection.retinanet.RetinaNet"] == "valid"  # its post-processing runs nms
    assert kinds["torchvision.models.detection.faster_rcnn.FasterRCNN"] == "valid"  # its RoI heads run roi_align
    namespace: dict = {"torch": torch}
    exec(rag.STUBS["torchvision.ops.boxes.nms"].replace("NAME", "nms"), namespace)
    gen = torch.Generator().manual_seed(0)
    corners = torch.rand(200, 2, generator=gen) * 50
    boxes = torch.cat([corners, corners + 1 + torch.rand(200, 2, generator=gen) * 30], dim=1)
    scores = torch.rand(200, generator=gen)
    for threshold in (0.3, 0.5, 0.7):
        assert torch.equal(namespace["nms"](boxes, scores, threshold), torchvision.ops.nms(boxes, scores, threshold))


def test_standard_library_constants_are_frozen_and_contextlib_is_imported(store):
    """v2 Resize reads `platform.machine()`: a class with the value at extraction stands in for the module;
    CutMix's helpers use contextlib.suppress, which networks may import."""
    out, _ = store
    blocks = {b.target: b for b in rag.valid_blocks(out)}
    resize = blocks["torchvision.transforms.v2._geometry.Resize"].code
    assert "class platform:" in resize and "import platform" not in resize
    assert "from contextlib import suppress" in blocks["torchvision.transforms.v2._augment.CutMix"].code


def test_definitions_of_other_modules_are_copied_in_dependency_order(store):
    """mobilenetv2.InvertedResidual uses ops.misc.Conv2dNormActivation (a subclass of a base class in the
    same module): both are copied, the base class before its subclass (needed when the module runs; names
    read only inside functions may come later)."""
    out, _ = store
    block = next(b for b in rag.valid_blocks(out) if b.target == "torchvision.models.mobilenetv2.InvertedResidual")
    code = block.code
    assert code.index("class ConvNormActivation") < code.index("class Conv2dNormActivation(ConvNormActivation)")
    assert code.index("class InvertedResidual") < code.index("BLOCK = InvertedResidual")


SWALLOWS_ERRORS = """
import torch


class BLOCK(torch.nn.Module):
    def forward(self, x):
        try:
            while True:  # its own `except Exception` catches whatever interrupts it
                x = x + 1
        except Exception:
            return x
"""


def test_a_block_past_its_cpu_time_is_a_timeout_even_where_it_swallows_the_interruption():
    answer, = rag.validate([{"code": SWALLOWS_ERRORS, "tries": [{"args": [], "kwargs": {}}]}],
                           blocked=["torchvision"], block_cpu_s=2)
    assert answer["ok"] is False and answer["kind"] == "timeout", answer
    assert 2 <= answer["seconds"] < 30


def test_bad_sources_are_refused_with_one_line(tmp_path):
    with pytest.raises(UserError, match="unknown rag source"):
        rag.build(["kornia"], tmp_path)
    proc = run_cli("rag", "build", "--sources", "torchvision,nope")
    assert proc.returncode == 2 and "unknown rag source 'nope'" in proc.stderr and "Traceback" not in proc.stderr


def test_a_source_that_is_not_installed_is_counted_and_the_others_build(tmp_path):
    import importlib.util

    if importlib.util.find_spec("timm") is not None:
        pytest.skip("timm is installed here")
    proc = run_cli("rag", "build", "--sources", "torchvision,timm", "--match", "resnet.BasicBlock",
                   "--out", str(tmp_path), "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["missing_sources"]["timm"].startswith("not installed") and "rag source timm" in proc.stderr
    assert summary["by_source"]["timm"]["targets"] == 0
    assert summary["by_source"]["torchvision"]["valid"] >= 1  # resnet.BasicBlock at least


def test_a_missing_store_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="rag build"):
        rag.valid_blocks(tmp_path)


def test_code_prompts_retrieve_blocks_and_candidates_record_them(store):
    import random

    from nngpt_ray.config import Config
    from nngpt_ray.corpus import seed_entries
    from nngpt_ray.datasets import dataset_info
    from nngpt_ray.spec import Transform
    from nngpt_ray.tasks.code import CodeTask

    out, _ = store
    blocks = rag.prompt_blocks(out, max_lines=80)
    assert blocks and all(".transforms." not in b.target and b.lines <= 80 for b in blocks)
    task = CodeTask(dataset_info("digits"), 2, Transform())
    task.use_blocks(blocks, k=2)
    rng = random.Random(0)
    prompts = [task.prompt(seed_entries(), rng) for _ in range(6)]
    for p in prompts:
        assert len(p.context["blocks"]) == 2
        text = p.messages[-1]["content"]
        assert "Building block 2" in text and "composed from the building blocks" in text
        assert "BLOCK = " not in text and "import torchvision" not in text
    assert len({b for p in prompts for b in p.context["blocks"]}) > 2  # not the same two every time
    plain = CodeTask(dataset_info("digits"), 2, Transform()).prompt(seed_entries(), random.Random(0))
    assert "Building block" not in plain.messages[-1]["content"] and not plain.context.get("blocks")

    with pytest.raises(ValueError, match="retrieval puts blocks into `code` prompts"):
        Config.model_validate({"rag": {"store": str(out)}})  # the default task is fill
    cfg = Config.model_validate({"rag": {"store": str(out / "missing")}, "task": {"kind": "code"}})
    with pytest.raises(UserError, match="holds no block store"):
        cfg.preflight()
