"""Page faults of a jitted step with a 64 MiB temporary, with or without keep_host_memory.

Usage: python tests/scripts/host_memory_faults.py {keep,default}
Prints one JSON line: whether the settings took effect, whether XLA:CPU dispatches
asynchronously, and the minor page faults of each of the last 8 of 16 calls.
"""

import json
import resource
import sys

from redundax.train import host_memory

keep = sys.argv[1] == "keep"
applied = host_memory.keep_host_memory(keep)

import jax  # noqa: E402  (after the allocator settings, as a user's script would do)
import jax.numpy as jnp  # noqa: E402


@jax.jit
def step(x):
    big = jnp.tanh(x @ x.T)  # 4096 x 4096 float32: a 64 MiB temporary ...
    return big @ x  # ... that the second product reads from memory


x = jnp.linspace(-1.0, 1.0, 4096 * 16).reshape(4096, 16)
faults = []
for _ in range(16):  # the heap grows over the first few calls, then stays
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    step(x).block_until_ready()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(
    json.dumps(
        {
            "applied": applied,
            "async_dispatch": jax.config.read("jax_cpu_enable_async_dispatch"),
            "faults_per_call": faults[8:],
        }
    )
)
