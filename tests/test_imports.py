"""Import costs and the lazy public names: ``import prediff`` and the command line's parser load no torch,
Diffusers or Accelerate, and every public name still resolves on first use.

The import checks run in a fresh interpreter, since the test process has long imported torch.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import types

import pytest

import prediff

HEAVY_MODULES = ("torch", "diffusers", "accelerate")

#: Packages whose ``__init__`` imports its public names on first use.
LAZY_PACKAGES = (
    "prediff",
    "prediff.baselines",
    "prediff.conversion",
    "prediff.data",
    "prediff.evaluation",
    "prediff.knowledge",
    "prediff.metrics",
    "prediff.pipelines",
    "prediff.schedulers",
    "prediff.training",
    "prediff.visualization",
)


def _run_fresh(code: str) -> object:
    """Run ``code`` in a new interpreter and return what it printed, read as JSON."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_importing_prediff_and_building_the_parser_loads_no_heavy_module():
    code = f"""
import json, sys
loaded = {{}}
import prediff
loaded["import prediff"] = [m for m in {HEAVY_MODULES!r} if m in sys.modules]
import prediff.cli
loaded["import prediff.cli"] = [m for m in {HEAVY_MODULES!r} if m in sys.modules]
prediff.cli.build_parser()
loaded["build_parser()"] = [m for m in {HEAVY_MODULES!r} if m in sys.modules]
print(json.dumps(loaded))
"""
    assert _run_fresh(code) == {"import prediff": [], "import prediff.cli": [], "build_parser()": []}


def test_a_lazy_package_offers_exactly_its_public_names_before_any_is_imported():
    """``dir()`` of a freshly imported package lists its ``__all__`` (and no name ``__all__`` lacks), so the
    table of lazy names and ``__all__`` agree."""
    code = f"""
import importlib, json, types
result = {{}}
for name in {LAZY_PACKAGES!r}:
    package = importlib.import_module(name)
    helpers = {{"TYPE_CHECKING", "lazy_exports"}}
    offered = [
        n for n in dir(package)
        if not n.startswith("_") and n not in helpers and not isinstance(vars(package).get(n), types.ModuleType)
    ]
    result[name] = [sorted(offered), sorted(package.__all__)]
print(json.dumps(result))
"""
    for name, (offered, declared) in _run_fresh(code).items():
        assert offered == declared, name


@pytest.mark.parametrize("package_name", LAZY_PACKAGES)
def test_every_public_name_resolves(package_name):
    package = importlib.import_module(package_name)
    for name in package.__all__:
        value = getattr(package, name)
        assert not isinstance(value, types.ModuleType), f"{package_name}.{name}"
        assert name in vars(package), f"{package_name}.{name} is not kept after its first use"


def test_lazy_names_keep_working():
    from prediff import PreDiffPipeline
    from prediff.pipelines.pipeline_prediff import PreDiffPipeline as defined

    assert prediff.PreDiffPipeline is PreDiffPipeline is defined
    assert type(prediff.get_metric("crps")).__name__ == "EnsembleCRPS"
    assert prediff.models.EarthformerModel is prediff.EarthformerModel  # sub-packages stay attributes
    assert "PreDiffPipeline" in dir(prediff)


@pytest.mark.parametrize("package_name", ["prediff", "prediff.training"])
def test_an_unknown_name_is_an_attribute_error_naming_it(package_name):
    package = importlib.import_module(package_name)
    with pytest.raises(AttributeError, match="no_such_name"):
        package.no_such_name  # noqa: B018
    with pytest.raises(ImportError, match="no_such_name"):
        exec(f"from {package_name} import no_such_name")


def test_a_name_shared_with_its_submodule_stays_the_name_once_the_submodule_is_imported():
    """``train_vae`` (in ``train_vae.py``) and ``persistence`` (in ``persistence.py``) stay functions when
    their submodules are imported before them, as the import system binds a submodule over its package's
    attribute."""
    code = """
import json
import prediff.baselines.optical_flow  # imports prediff.baselines.persistence
import prediff.training.registry  # imports prediff.training.train_vae, ...
import prediff.baselines, prediff.training
print(json.dumps([
    type(prediff.baselines.persistence).__name__,
    type(prediff.training.train_vae).__name__,
    type(prediff.training.train_denoiser).__name__,
]))
"""
    assert _run_fresh(code) == ["function", "function", "function"]
