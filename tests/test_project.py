"""The project's set-up: pyproject is the single source of truth and environment.yml agrees."""

import subprocess
import sys
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
ENV = yaml.safe_load((ROOT / "environment.yml").read_text())


def _conda_deps():
    return [d for d in ENV["dependencies"] if isinstance(d, str)]


def _pip_lines():
    return next(d["pip"] for d in ENV["dependencies"] if isinstance(d, dict))


def test_environment_python_satisfies_requires_python():
    python = next(d for d in _conda_deps() if d.startswith("python="))
    version = Version(python.split("=", 1)[1])
    assert version in SpecifierSet(PYPROJECT["project"]["requires-python"])


def test_environment_installs_this_package_with_existing_extras():
    pip_lines = _pip_lines()
    assert len(pip_lines) == 1, "pip section must only install the package from pyproject"
    line = pip_lines[0]
    assert line.startswith("-e ") and '"."' not in line
    extras = line.split("[", 1)[1].split("]", 1)[0].split(",")
    assert set(extras) <= set(PYPROJECT["project"]["optional-dependencies"])


def test_conda_packages_satisfy_pyproject_constraints():
    """Any package conda installs itself (e.g. CUDA torch) must meet pyproject's constraint."""
    conda_name = {"pytorch-gpu": "torch"}
    declared = {Requirement(r).name: Requirement(r) for r in PYPROJECT["project"]["dependencies"]}
    checked = 0
    for dep in _conda_deps():
        name, _, spec = dep.partition(">=")
        name = conda_name.get(name, name)
        if name in declared and spec:
            # the conda lower bound must not admit versions pyproject rejects
            assert Version(spec) in declared[name].specifier, dep
            checked += 1
    assert checked >= 1


def test_cli_help_lists_every_subcommand():
    out = subprocess.run([sys.executable, "-m", "experiments", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for command in ("train", "sweep", "status", "study", "flops", "bench", "figures",
                    "verdicts", "attention", "export", "demo"):
        assert command in out


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert "make test" in (ROOT / "README.md").read_text()


def test_conda_torch_is_current_and_pinned_as_pyproject_pins_it():
    """A CUDA torch from conda-forge (the `pytorch` channel stopped at torch 2.5.1, and its
    pytorch-cuda with it) whose lower bound is pyproject's, the lowest torch the tests run
    on; the Makefile's CPU pin is in that range. No conda solver can run here, so the pins
    are checked instead of a solve."""
    import re

    assert ENV["channels"] == ["conda-forge"]
    assert not [d for d in _conda_deps() if re.fullmatch(r"pytorch(-cuda)?([<>=!].*)?", d)]
    torch = next(Requirement(r) for r in PYPROJECT["project"]["dependencies"]
                 if Requirement(r).name == "torch")
    (lowest,) = [s.version for s in torch.specifier if s.operator == ">="]
    assert "pytorch-gpu>=" + lowest in _conda_deps()
    makefile_pin = re.search(r"^TORCH \?= torch==([\w.]+)$", (ROOT / "Makefile").read_text(),
                             re.M).group(1)
    assert Version(makefile_pin) in torch.specifier
