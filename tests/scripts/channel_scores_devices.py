"""Lesion damage and Taylor scores on a `data` mesh of 8 CPU devices equal those on 1 device.

Run with JAX_NUM_CPU_DEVICES=8. Batch sizes 7 and 13 leave padded, masked last batches (7 and 13
examples do not fill the 8 devices evenly), 40 divides the split. Prints 'channel scores OK'.
"""

import jax
import numpy as np
from flax import nnx

from redundax.models.resnet import ResNet
from redundax.prune import channels as pc
from redundax.prune import graph as G
from redundax.train import mesh as mesh_lib
from tests.test_prune_channels import randomize_bn

assert jax.device_count() == 8, jax.devices()
model = randomize_bn(  # non-trivial eval-mode BatchNorm
    ResNet(10, in_channels=1, widths=(8, 16), blocks=(1, 1), rngs=nnx.Rngs(0)), seed=0
)
rng = np.random.default_rng(1)
g = G.channel_graph(model)
x = rng.normal(size=(40, 8, 8, 1)).astype(np.float32)
y = (np.arange(40) % 10).astype(np.int32)
meshes = {1: mesh_lib.make_data_mesh(jax.devices()[:1]), 8: mesh_lib.make_data_mesh()}
out = {}
for devices, mesh in meshes.items():
    for bs in (7, 40):
        out[devices, "lesion", bs] = np.concatenate(
            [pc.lesion_damage(model, g, u, [0, 3, 5], x, y, batch_size=bs, mesh=mesh)
             for u in g.names[:3]]
        )  # fmt: skip
    batches = [(x[:13], y[:13]), (x[13:37], y[13:37])]
    sc = pc.taylor_scores(model, g, batches, mesh=mesh)
    out[devices, "taylor"] = np.concatenate([sc[n] for n in g.names])
for key in [k for k in out if k[0] == 1]:
    one, eight = out[key], out[(8, *key[1:])]
    assert np.abs(one).max() > 1e-3, key  # not vacuous
    np.testing.assert_allclose(eight, one, rtol=1e-4, atol=1e-6, err_msg=str(key))
    print(key[1:], "max |8 - 1| =", float(np.abs(eight - one).max()))
for bs in (7,):  # the batch size does not change the lesion damage either
    np.testing.assert_allclose(out[1, "lesion", bs], out[1, "lesion", 40], rtol=1e-4, atol=1e-6)
print("channel scores OK")
