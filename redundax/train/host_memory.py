"""Host memory for XLA:CPU: keep freed buffers in the heap instead of returning them to the OS.

XLA:CPU allocates every step's temporaries (activations kept for the backward pass, gradients,
attention weights) as one block with ``malloc`` and frees it at the step's end. glibc serves a
block over 32 MiB (the most its ``mmap`` threshold can be) with a fresh ``mmap`` and returns it
with ``munmap``, so every step touches fresh pages: one page fault and one zeroed 4 KiB page per
page. On the CIFAR-size MAE step of ``benchmarks/mae_step.py`` (a 573 MB block) that is 140,000
page faults and a quarter of the step's time; on the default MAE sweep's vectorised step over 21
members, more than half.

:func:`keep_host_memory` makes glibc reuse the block instead:

- ``mallopt(M_MMAP_MAX, 0)``: large blocks come from the main heap, not from fresh mappings;
- ``mallopt(M_TRIM_THRESHOLD, 2**31 - 1)``: freed memory at the heap's top stays mapped;
- ``jax_cpu_enable_async_dispatch = False``: XLA:CPU runs a computation on the thread that calls
  it, the Python thread, whose allocations come from that main heap. (With asynchronous dispatch
  a worker thread allocates the block, from its own arena, which cannot hold blocks over 64 MiB
  and maps them whatever the settings; limiting the process to one arena instead slowed the
  tiny MAE step by 20-50%, on one thread as on two.) Accelerator backends are not
  affected. On CPU the Python thread now waits for each computation, so the host work between
  steps (the next batch, its sharding) no longer overlaps the step: what small steps lose.

The process then holds its peak host memory until it exits, as a caching allocator does. The
settings are global to the process (the ``malloc`` ones apply to every library in it, PyTorch
included) and take effect only before JAX creates its CPU client: call it first thing, before
the first JAX computation. It pays where a step's temporaries exceed 32 MiB; a small step
(milliseconds) loses 10-20% to synchronous dispatch instead. So an experiment's command line
applies it where the experiment asks (``redundax.train.cli.main(..., keep_host_memory=)``: the
MAE sweep when vectorised). The environment variable ``REDUNDAX_KEEP_HOST_MEMORY=1`` (or ``0``)
applies it (or not) whatever the caller asks. Elsewhere than on glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

import jax

ENV_VAR = "REDUNDAX_KEEP_HOST_MEMORY"
# glibc's <malloc.h> parameter numbers
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
SETTINGS = ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**31 - 1))


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


def requested(default: bool) -> bool:
    """``default``, unless the environment variable ``REDUNDAX_KEEP_HOST_MEMORY`` says otherwise
    (``1``/``true``/``yes``/``on`` or ``0``/``false``/``no``/``off``)."""
    value = os.environ.get(ENV_VAR, "").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    if value:
        raise ValueError(f"{ENV_VAR}={value!r}: use 1 (keep host memory) or 0 (JAX's defaults).")
    return default


def keep_host_memory(enable: bool = True) -> bool:
    """Make glibc's ``malloc`` reuse freed host memory and XLA:CPU run computations on the
    calling thread (module docstring).

    Args:
      enable: apply the settings (default) or not; the environment variable
        ``REDUNDAX_KEEP_HOST_MEMORY`` (``1`` or ``0``) overrides it.

    Returns:
      Whether the settings are in effect (False where the C library is not glibc, or when
      disabled).
    """
    if not requested(enable):
        return False
    libc = _glibc()
    if libc is None:
        return False
    ok = all(libc.mallopt(param, value) == 1 for param, value in SETTINGS)
    if ok:
        jax.config.update("jax_cpu_enable_async_dispatch", False)
    return ok


__all__ = ["ENV_VAR", "keep_host_memory", "requested"]
