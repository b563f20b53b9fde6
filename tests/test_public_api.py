"""`import redundax as rx` exposes the subpackages lazily."""

import subprocess
import sys

import pytest

import redundax as rx


def test_import_is_light():
    code = "import sys, redundax; print(int('jax' in sys.modules), int('flax' in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0", "0"]


@pytest.mark.parametrize(
    "name", ["functionals", "transforms", "train", "data", "prune", "analysis"]
)
def test_subpackages_resolve(name):
    module = getattr(rx, name)
    assert module.__name__ == f"redundax.{name}"


def test_functionals_names():
    assert callable(rx.functionals.spectral_redundancy)
    assert callable(rx.transforms.redreg)


def test_unknown_attribute_names_the_subpackages():
    with pytest.raises(AttributeError, match="public subpackages"):
        rx.does_not_exist  # noqa: B018


def test_importing_the_package_starts_no_jax_backend():
    """A backend started at import time breaks a later `jax.distributed.initialize`."""
    code = (
        "import importlib\n"
        "from jax._src import xla_bridge\n"
        "for m in ['redundax.functionals', 'redundax.monitor', 'redundax.transforms',\n"
        "          'redundax.train.loop', 'experiments.classify', 'experiments.monitor']:\n"
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
