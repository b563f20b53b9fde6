"""Host memory for XLA:CPU: keep freed buffers in the heap instead of returning them to the OS.

XLA:CPU allocates every step's temporaries (activations kept for the backward pass, gradients,
attention weights) with ``malloc`` on the thread that runs the step and frees them at its end.
With glibc's defaults each such block of hundreds of megabytes is ``mmap``-ed from the kernel
and ``munmap``-ed when freed, so the next step touches fresh pages: one page fault and one
zeroed 4 KiB page per page, every step. On the CIFAR-size MAE step of
``benchmarks/mae_step.py`` that is 140,000 page faults and a quarter of the step's time.

:func:`keep_host_memory` sets three ``mallopt`` parameters of glibc (Linux) so that freed
memory is reused instead:

- ``M_ARENA_MAX = 1``: one heap for every thread (a thread's own arena cannot hold blocks over
  64 MiB, so its large blocks would be ``mmap``-ed whatever the other settings say);
- ``M_MMAP_MAX = 0``: large blocks come from the heap, not from fresh mappings;
- ``M_TRIM_THRESHOLD = 2**31 - 1``: freed memory at the heap's top stays mapped.

The process then holds its peak host memory until it exits, as a caching allocator does. The
setting is global to the process (it applies to every library in it, PyTorch included) and takes
full effect only before JAX starts its CPU thread pool: call it first thing, before the first JAX
computation. Every experiment's command line does (:func:`redundax.train.cli.main`). Set the
environment variable ``REDUNDAX_KEEP_HOST_MEMORY=0`` to leave the allocator alone. Elsewhere
than on glibc it does nothing.

The same effect without code: ``MALLOC_ARENA_MAX=1 MALLOC_MMAP_MAX_=0
MALLOC_TRIM_THRESHOLD_=2147483647`` in the environment of the process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

ENV_VAR = "REDUNDAX_KEEP_HOST_MEMORY"
# glibc's <malloc.h> parameter numbers
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8
SETTINGS = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**31 - 1))


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # noqa: B018 (only glibc has it)
        libc.mallopt  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def keep_host_memory(enable: bool | None = None) -> bool:
    """Make glibc's ``malloc`` reuse freed host memory (module docstring).

    Args:
      enable: True to apply the settings, False to do nothing; None (default) applies them
        unless the environment variable ``REDUNDAX_KEEP_HOST_MEMORY`` is ``0``.

    Returns:
      Whether the settings are in effect (False where the C library is not glibc, or when
      disabled).
    """
    if enable is None:
        enable = os.environ.get(ENV_VAR, "1").strip().lower() not in ("0", "false", "no", "off")
    if not enable:
        return False
    libc = _glibc()
    if libc is None:
        return False
    return all(libc.mallopt(param, value) == 1 for param, value in SETTINGS)


__all__ = ["ENV_VAR", "keep_host_memory"]
