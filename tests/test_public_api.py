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
