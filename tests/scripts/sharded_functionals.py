"""Each functional under jit on a batch sharded over 8 CPU devices equals its single-device value.

Run with JAX_NUM_CPU_DEVICES=8. Prints 'sharded OK' and 'float64 OK' on success.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import redundax.functionals as F

assert jax.device_count() == 8, jax.devices()
mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
rng = np.random.default_rng(0)
fns = {
    "spectral_redundancy": F.spectral_redundancy,
    "effective_rank": F.effective_rank,
    "gaussian_total_correlation": F.gaussian_total_correlation,
    "chi2_redundancy": F.chi2_redundancy,
    "covariance": F.covariance,
    "correlation": F.correlation,
}
for n, d in [(64, 12), (16, 40)]:  # n > d and the Gram path n < d
    x = rng.normal(size=(n, d)).astype(np.float32) @ rng.normal(size=(d, d)).astype(np.float32)
    xs = jax.device_put(x, NamedSharding(mesh, P("data", None)))
    assert len(xs.sharding.device_set) == 8
    for name, fn in fns.items():
        single = np.asarray(jax.jit(fn)(jnp.asarray(x)))
        sharded = np.asarray(jax.jit(fn)(xs))
        np.testing.assert_allclose(sharded, single, rtol=2e-4, atol=1e-5, err_msg=name)
        g1 = np.asarray(jax.jit(jax.grad(lambda z, fn=fn: jnp.sum(fn(z))))(jnp.asarray(x)))
        g8 = np.asarray(jax.jit(jax.grad(lambda z, fn=fn: jnp.sum(fn(z))))(xs))
        np.testing.assert_allclose(g8, g1, rtol=2e-3, atol=1e-4, err_msg=f"grad {name}")

# Moments.psum inside shard_map gives the global moments.
x = rng.normal(size=(64, 5)).astype(np.float32)


@functools.partial(jax.shard_map, mesh=mesh, in_specs=P("data", None), out_specs=P())
def global_cov(local):
    return F.Moments.from_samples(local).psum("data").covariance()


np.testing.assert_allclose(jax.jit(global_cov)(x), np.cov(x, rowvar=False), rtol=1e-4, atol=1e-6)
print("sharded OK")

jax.config.update("jax_enable_x64", True)
x64 = rng.normal(size=(50, 6)) @ rng.normal(size=(6, 6))
for name, fn in fns.items():
    assert fn(jnp.asarray(x64)).dtype == jnp.float64, name
c = np.corrcoef(x64, rowvar=False)
np.testing.assert_allclose(
    F.chi2_redundancy(jnp.asarray(x64)), 0.25 * np.sum((c - np.eye(6)) ** 2), rtol=1e-12
)
lam = np.linalg.eigvalsh(np.cov(x64, rowvar=False))
p = lam / lam.sum()
np.testing.assert_allclose(F.spectral_entropy(jnp.asarray(x64)), -np.sum(p * np.log(p)), rtol=1e-12)
np.testing.assert_allclose(
    F.gaussian_total_correlation(jnp.asarray(x64), shrinkage=0.0),
    -0.5 * np.linalg.slogdet(c)[1],
    rtol=1e-10,
)
print("float64 OK")
