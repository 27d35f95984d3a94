"""The package as a cluster image or a GPU node gets it: a wheel, installed non-editable, nothing from
this checkout on the path."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
# source folder -> where it is installed (actors/, serve/ and baselines/ live inside nngpt_ray)
SOURCES = {"nngpt_ray": "nngpt_ray", "actors": "nngpt_ray/actors", "serve": "nngpt_ray/serve",
           "baselines": "nngpt_ray/baselines"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", str(ROOT),
                            "-w", str(tmp / "dist")], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-3000:]
    wheel = next((tmp / "dist").glob("nngpt_ray-*.whl"))
    target = tmp / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), str(wheel)],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    return wheel, target


def _isolated_env(target: Path) -> dict:
    """Only the installed copy is importable: not this checkout, not the editable install's finder."""
    return {**os.environ, "PYTHONPATH": str(target), "PYTHONNOUSERSITE": "1"}


def test_the_wheel_holds_every_source_file(installed):
    wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"{dest}/{path.relative_to(ROOT / src).as_posix()}"
                for src, dest in SOURCES.items() for path in (ROOT / src).rglob("*.py")
                if "__pycache__" not in path.parts}
    assert expected - names == set()
    assert "nngpt_ray/py.typed" in names and "nngpt_ray/sandbox/child.py" in names


def test_every_module_imports_from_the_installed_wheel(installed):
    _, target = installed
    modules = sorted(
        ".".join(p.relative_to(target).with_suffix("").parts).removesuffix(".__init__")
        for p in (target / "nngpt_ray").rglob("*.py") if p.name != "child.py" and p.name != "shapecheck.py"
        and "seeds" not in p.parts)
    code = ("import importlib, sys\n"
            f"for name in {modules!r}:\n"
            "    module = importlib.import_module(name)\n"
            f"    assert module.__file__.startswith({str(target)!r}), (name, module.__file__)\n"
            "import nngpt_ray\n"
            "assert nngpt_ray.__file__ is not None and callable(nngpt_ray.run) and callable(nngpt_ray.evaluate)\n"
            "print(len(sys.modules))")
    proc = subprocess.run([sys.executable, "-s", "-c", code], cwd=target.parent, env=_isolated_env(target),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "nngpt_ray.serve.engines.hf" in modules and "nngpt_ray.actors.controller" in modules


def test_the_installed_command_runs(installed):
    _, target = installed
    proc = subprocess.run([sys.executable, "-s", "-c", "import sys; from nngpt_ray.cli import main; sys.exit(main())",
                           "--help"], cwd=target.parent, env=_isolated_env(target), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and "nngpt" in proc.stdout and "run" in proc.stdout, proc.stderr[-2000:]


def test_a_source_tree_ahead_of_the_installed_copy_still_has_every_subpackage(installed):
    """Ray puts the driver's working directory first on its workers' sys.path: a run started in a checkout
    imports nngpt_ray from the checkout, whose actors/, serve/ and baselines/ sit beside it, not inside."""
    _, target = installed
    code = ("import nngpt_ray, nngpt_ray.serve.app, nngpt_ray.actors.launcher, nngpt_ray.baselines.compare\n"
            f"assert nngpt_ray.__file__.startswith({str(ROOT)!r}), nngpt_ray.__file__\n"
            f"assert nngpt_ray.serve.app.__file__ == {str(ROOT / 'serve' / 'app.py')!r}, nngpt_ray.serve.app.__file__\n")
    # -S: no site processing, so no editable install's finder; the dependencies' folders are added plainly
    libs = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(target), *libs]), "PYTHONNOUSERSITE": "1"}
    proc = subprocess.run([sys.executable, "-S", "-c", code], cwd=target.parent, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
