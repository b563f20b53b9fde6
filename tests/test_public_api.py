"""`import redundax as rx` exposes the subpackages lazily; each lists its public names."""

import importlib
import subprocess
import sys
import types

import pytest

import redundax as rx

SUBPACKAGES = [
    "analysis",
    "data",
    "functionals",
    "models",
    "monitor",
    "plots",
    "prune",
    "train",
    "transforms",
]
# Subpackages whose `__init__` does not list its public names yet.
WITHOUT_ALL = {"prune"}


def test_import_is_light():
    code = "import sys, redundax; print(int('jax' in sys.modules), int('flax' in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0", "0"]


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_subpackages_resolve(name):
    module = getattr(rx, name)
    assert module.__name__ == f"redundax.{name}"
    assert name in rx.__all__ and name in dir(rx)


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_every_public_name_resolves(name):
    module = importlib.import_module(f"redundax.{name}")
    if name in WITHOUT_ALL and not hasattr(module, "__all__"):
        pytest.skip(f"redundax.{name} does not list its public names yet")
    public = module.__all__
    assert public and len(set(public)) == len(public), public
    for attr in public:
        value = getattr(module, attr)  # a submodule is imported on first access
        if isinstance(value, types.ModuleType):
            assert value.__name__ == f"redundax.{name}.{attr}"
        assert attr in dir(module)
    star: dict = {}
    exec(f"from redundax.{name} import *", star)
    assert set(public) <= set(star)


def test_a_missing_submodule_is_an_attribute_error_listing_the_submodules():
    with pytest.raises(AttributeError, match=r"public submodules: .*loop"):
        rx.train.does_not_exist  # noqa: B018


def test_functionals_names():
    assert callable(rx.functionals.spectral_redundancy)
    assert callable(rx.transforms.redreg)


def test_unknown_attribute_names_the_subpackages():
    with pytest.raises(AttributeError, match="public subpackages"):
        rx.does_not_exist  # noqa: B018


def test_importing_the_package_starts_no_jax_backend():
    """A backend started at import time breaks a later `jax.distributed.initialize`."""
    code = (
        "import importlib, sys\n"
        "import redundax as rx\n"
        "assert 'jax' not in sys.modules\n"
        "from jax._src import xla_bridge\n"
        f"for name in {SUBPACKAGES!r}:\n"
        "    module = getattr(rx, name)\n"
        "    for attr in getattr(module, '__all__', ()):\n"
        "        getattr(module, attr)\n"
        "    assert not xla_bridge._backends, name\n"
        "for m in ['experiments.classify', 'experiments.monitor', 'experiments.functionals_demo']:\n"
        "    importlib.import_module(m)\n"
        "    assert not xla_bridge._backends, m\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


def test_builtin_kernels_pass_the_construction_check():
    for kernel in (
        rx.functionals.kl,
        rx.functionals.pearson_chi2,
        rx.functionals.squared_hellinger,
        rx.functionals.jensen_shannon,
        rx.functionals.total_variation,
    ):
        rx.functionals.FKernel(kernel.name, kernel.f, kernel.conjugate)  # raises if not valid
