"""The functionals demo's estimator section on a tiny setting: files written, values checked."""

import json

import jax.numpy as jnp
import numpy as np

from experiments import functionals_demo as demo
from tests import processes


def test_estimator_section_writes_tables_and_figure(tmp_path):
    result = demo.estimator_section(
        tmp_path, unit_counts=(3,), train_steps=20, num_resamples=16, variational_steps=100
    )
    for name in ("estimators.json", "estimators.md", "estimators.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert json.loads((tmp_path / "estimators.json").read_text()) == result
    rows = {r["estimator"]: r for r in result["estimates"]}
    assert set(rows) == {"Gaussian TC", "KSG TC", "variational KL", "Gaussian O-info"}
    for r in rows.values():
        assert r["low"] <= r["estimate"] <= r["high"], r
    # The Gaussian row is -1/2 log det of the NumPy correlation of the same three units (shrinkage
    # 1e-4 moves it by < 1e-3 here).
    acts, _ = demo.digits_activations(20)  # cached: the activations the section used
    units = np.sort(np.argsort(-acts.var(0))[:3])
    c = np.corrcoef(acts[:, units].astype(np.float64), rowvar=False)
    np.testing.assert_allclose(
        rows["Gaussian TC"]["estimate"], -0.5 * np.linalg.slogdet(c)[1], atol=1e-3
    )
    o_ref = -np.linalg.slogdet(c)[1] - 0.5 * np.sum(np.log(np.diag(np.linalg.inv(c))))
    np.testing.assert_allclose(rows["Gaussian O-info"]["estimate"], o_ref, atol=1e-3)
    assert "| top-3 units | KSG TC |" in (tmp_path / "estimators.md").read_text()
    assert jnp.isfinite(rows["variational KL"]["estimate"])


def test_classifier_on_eight_devices_equals_one_device(tmp_path):
    """The demo's classifier trains on the engine's data mesh: 8 simulated devices give the same
    activations and accuracy as 1 (only the order of float32 sums differs)."""
    script = (
        "import numpy as np, sys\n"
        "from experiments import functionals_demo as demo\n"
        "acts, acc = demo.digits_activations(30)\n"
        "np.save(sys.argv[1], acts); print(acc)\n"
    )
    runs = [
        processes.launch(["-c", script, str(tmp_path / f"{n}.npy")], JAX_NUM_CPU_DEVICES=str(n))
        for n in (1, 8)
    ]
    outs = processes.finish(runs)
    one, eight = (np.load(tmp_path / f"{n}.npy") for n in (1, 8))
    assert one.shape == (1797, 32)
    np.testing.assert_allclose(eight, one, rtol=1e-4, atol=1e-5)
    assert abs(float(outs[0].split()[-1]) - float(outs[1].split()[-1])) <= 1 / 597 + 1e-9
