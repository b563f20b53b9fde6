"""Measured inference latency of physically shrunk networks, next to their MACs.

FLOPs are not time: structured pruning that halves the multiply-accumulates can leave latency
unchanged (per-layer overhead, dispatch, memory traffic) or even raise it (awkward channel counts),
as users of SliceGPT and LLM-Pruner report. `redundax.prune.channels.shrink` turns a masked network
into a smaller dense one, so its latency can be measured, not assumed.

A `Program` is the eval-mode forward pass (running BatchNorm statistics) of one model compiled once
for one input shape, with its arguments placed on the device. `time_programs` runs several programs
round-robin (each repeat runs every program once, starting one program later than the repeat
before), after `warmup` untimed calls, and reports the median wall time of `repeats` calls with
`block_until_ready`: on a shared machine a load change then hits every program alike, and latency
ratios against a reference timed in the same round-robin (the unpruned network) stay meaningful
where absolute times are inflated. Their resolution is the load's: on 2 CPU cores under a load
average of ~12, four copies of one program timed this way (60 repeats, batch 1) had medians up to
15% apart.

`program_macs` counts the multiply-accumulates of the convolutions and matrix products in the very
program that is timed (its StableHLO), so a test can check that the timed network is the shrunk one:
its count equals the hand count of `redundax.prune.flops.count_macs` under the pruning masks.
Depthwise convolutions that `redundax.models.layers.ConvBN` computes as a sum of shifted slices (not
an HLO convolution) are elementwise ops in the program and are not among the counted ops.
`xla_flops` reports XLA's own cost analysis of the compiled executable (which counts only the
unpadded window positions of a convolution, so it is below 2 x MACs for padded convs).
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from redundax.prune import channels as channels_lib

MAX_REPEATS_FACTOR = 50


@dataclasses.dataclass(frozen=True)
class Program:
    """The eval-mode forward pass of one model compiled for one batch shape, and its arguments.

    Calling it runs exactly the executable in `compiled` (no retracing, no recompilation).
    """

    batch_size: int
    lowered: Any  # jax.stages.Lowered
    compiled: Any  # jax.stages.Compiled
    args: tuple[Any, ...]

    def __call__(self) -> jax.Array:
        return self.compiled(*self.args)


@dataclasses.dataclass(frozen=True)
class Timing:
    """Wall time of one program over `repeats` timed calls (the number made), in milliseconds."""

    median_ms: float
    q25_ms: float
    q75_ms: float
    repeats: int


def compile_forward(
    model, image_shape: Sequence[int], batch_size: int, *, seed: int = 0
) -> Program:
    """Compile `model`'s eval-mode forward pass for a `(batch_size, *image_shape)` float32 input.

    The input is standard normal noise (latency does not depend on the values). The model's state is
    passed as an argument, not baked in as constants, so the program reads the model's own (shrunk)
    parameter arrays.
    """
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1; got {batch_size}.")
    if len(image_shape) != 3:
        raise ValueError(f"`image_shape` must be (H, W, C); got {tuple(image_shape)}.")
    gdef, state = nnx.split(nnx.view(model, use_running_average=True))

    def forward(state, x):
        return nnx.merge(gdef, state)(x)

    x = jax.random.normal(jax.random.key(seed), (batch_size, *image_shape), jnp.float32)
    args = (state, x)
    lowered = jax.jit(forward).lower(*args)
    return Program(batch_size, lowered, lowered.compile(), args)


def time_programs(
    programs: Sequence[Program],
    *,
    repeats: int,
    warmup: int = 2,
    rotate: bool = True,
    min_time_s: float = 0.0,
) -> list[Timing]:
    """Median wall time of each program, timed round-robin (module docstring).

    Args:
      programs: compiled programs (`compile_forward`); the first is usually the reference.
      repeats: timed calls per program; the median is reported (robust to load spikes).
      warmup: untimed calls per program first (allocations, caches, thread pools).
      rotate: start each repeat's round one program later, so that no program always runs first.
      min_time_s: keep repeating (up to `MAX_REPEATS_FACTOR * repeats` rounds) until the rounds
        took this long: fast programs (batch 1) then get many more samples at little cost.
    """
    if repeats < 1:
        raise ValueError(f"`repeats` must be >= 1; got {repeats}.")
    if warmup < 0:
        raise ValueError(f"`warmup` must be >= 0; got {warmup}.")
    for _ in range(warmup):
        for p in programs:
            jax.block_until_ready(p())
    n = len(programs)
    rounds, start = [], time.perf_counter()
    while len(rounds) < repeats or (
        time.perf_counter() - start < min_time_s and len(rounds) < MAX_REPEATS_FACTOR * repeats
    ):
        r, row = len(rounds), np.zeros(n)
        for i in np.roll(np.arange(n), -r) if rotate else range(n):
            t0 = time.perf_counter()
            jax.block_until_ready(programs[i]())
            row[i] = time.perf_counter() - t0
        rounds.append(row)
    times = np.stack(rounds, axis=1) if rounds else np.zeros((n, 0))
    out = []
    for t in times * 1e3:
        q25, med, q75 = np.quantile(t, [0.25, 0.5, 0.75])
        out.append(Timing(float(med), float(q25), float(q75), times.shape[1]))
    return out


def measure_latency(
    models: Sequence[Any],
    image_shape: Sequence[int],
    batch_sizes: Sequence[int] = (1, 256),
    *,
    repeats: int = 20,
    warmup: int = 2,
    min_time_s: float = 0.0,
) -> dict[int, list[Timing]]:
    """Median latency of each model's forward pass at each batch size, models timed round-robin.

    Put the reference (the unpruned network) first: its timing then shares the load conditions of
    the others, and ratios against it are what to report on a shared machine.

    Returns:
      `{batch_size: [Timing per model]}`.
    """
    return {
        b: ts
        for b, (_, ts) in _compile_and_time(
            models, image_shape, batch_sizes, repeats=repeats, warmup=warmup, min_time_s=min_time_s
        ).items()
    }


def _compile_and_time(models, image_shape, batch_sizes, *, repeats, warmup, min_time_s=0.0):
    if not models:
        raise ValueError("`models` is empty; pass at least one model.")
    if not batch_sizes:
        raise ValueError("`batch_sizes` is empty; pass e.g. (1, 256).")
    out = {}
    for b in batch_sizes:
        progs = [compile_forward(m, image_shape, int(b)) for m in models]
        out[int(b)] = (
            progs,
            time_programs(progs, repeats=repeats, warmup=warmup, min_time_s=min_time_s),
        )
    return out


def pruned_latency(
    model,
    graph,
    masks_seq: Sequence[Any],
    image_shape: Sequence[int],
    batch_sizes: Sequence[int] = (1, 256),
    *,
    repeats: int = 20,
    warmup: int = 2,
    min_time_s: float = 0.0,
) -> dict[str, Any]:
    """Latency of the physically shrunk network of each mask set, beside the unpruned `model`.

    Every mask set is turned into a smaller dense network (`redundax.prune.channels.shrink`) whose
    forward pass is compiled and timed round-robin with the unpruned network's, once per batch
    size. The shrunk network's weights are irrelevant to its latency; its shapes are those of the
    fine-tuned pruned network.

    Returns:
      `{"full_ms": {b: median}, "ms": {b: [median per mask set]}, "ratio": {b: [ms / full_ms]},
      "xla_flops": [XLA cost-analysis FLOPs per image of each shrunk network's program at the
      first batch size], "full_xla_flops": float, "program_macs": [`program_macs` per image of
      each timed shrunk program]}` with integer batch-size keys.
    """
    small = [channels_lib.shrink(model, graph, m)[0] for m in masks_seq]
    runs = _compile_and_time(
        [model, *small],
        image_shape,
        batch_sizes,
        repeats=repeats,
        warmup=warmup,
        min_time_s=min_time_s,
    )
    out: dict[str, Any] = {"full_ms": {}, "ms": {}, "ratio": {}}
    for b, (_, ts) in runs.items():
        out["full_ms"][b] = ts[0].median_ms
        out["ms"][b] = [t.median_ms for t in ts[1:]]
        out["ratio"][b] = [t.median_ms / ts[0].median_ms for t in ts[1:]]
    b0, (progs, _) = next(iter(runs.items()))
    flops = [xla_flops(p) / b0 for p in progs]
    out["full_xla_flops"], out["xla_flops"] = flops[0], flops[1:]
    out["program_macs"] = [program_macs(p) // b0 for p in progs[1:]]
    return out


# ------------------------------------------------------------------------------------------------
# What the timed program computes

_CONV = re.compile(
    r"stablehlo\.convolution.*dim_numbers = \[[^\]]*\]x\[([^\]]*)\]->.*"
    r":\s*\(tensor<([^>]*)>,\s*tensor<([^>]*)>\)\s*->\s*tensor<([^>]*)>"
)
_DOT = re.compile(
    r"stablehlo\.dot_general.*contracting_dims = \[([^\]]*)\] x \[[^\]]*\].*"
    r":\s*\(tensor<([^>]*)>,\s*tensor<([^>]*)>\)\s*->\s*tensor<([^>]*)>"
)


def _dims(tensor_type: str) -> tuple[int, ...]:
    """`"1x8x8x3xf32"` -> (1, 8, 8, 3)."""
    return tuple(int(d) for d in tensor_type.split("x")[:-1])


def hlo_macs(text: str) -> int:
    """Multiply-accumulates of every convolution and dot_general in a StableHLO module's text.

    A convolution costs (output elements) x (kernel elements / output features), i.e.
    H W kh kw C_in/groups C_out per image; a dot_general costs (output elements) x (product of the
    contracted dimensions). Ops outside `@main` (in called functions, possibly called several times)
    are refused rather than miscounted.
    """
    total = 0
    for func in re.split(r"(?=func\.func )", text):
        name = re.match(r"func\.func (?:public |private )?@\"?([^\"(]+)", func)
        ops = _ops_macs(func)
        if ops and name is not None and name.group(1) != "main":
            raise ValueError(
                f"function @{name.group(1)} holds convolutions or matrix products; "
                "hlo_macs counts only ops inlined into @main."
            )
        total += ops
    return total


def _ops_macs(text: str) -> int:
    total = 0
    for line in text.splitlines():
        if "stablehlo.convolution" in line:
            m = _CONV.search(line)
            if m is None:
                raise ValueError(f"unparsed convolution: {line.strip()[:200]}")
            kernel_labels = [s.strip() for s in m.group(1).split(",")]
            kernel, out = _dims(m.group(3)), _dims(m.group(4))
            total += math.prod(out) * math.prod(kernel) // kernel[kernel_labels.index("o")]
        elif "stablehlo.dot_general" in line:
            m = _DOT.search(line)
            if m is None:
                raise ValueError(f"unparsed dot_general: {line.strip()[:200]}")
            lhs, out = _dims(m.group(2)), _dims(m.group(4))
            contract = [int(c) for c in m.group(1).split(",") if c.strip()]
            total += math.prod(out) * math.prod(lhs[c] for c in contract)
    return total


def program_macs(program: Program) -> int:
    """MACs of the convolutions and matrix products of the timed program (whole batch)."""
    return hlo_macs(program.lowered.as_text())


def xla_flops(program: Program) -> float:
    """XLA's cost-analysis FLOPs of the compiled executable (whole batch)."""
    cost = program.compiled.cost_analysis()
    if isinstance(cost, list | tuple):  # older jax: one dict per executable
        cost = cost[0]
    return float(cost["flops"])


def parameter_shapes(program: Program) -> list[tuple[int, ...]]:
    """Shapes of the compiled executable's array arguments (the model's state, then the input)."""
    return [tuple(a.shape) for a in jax.tree.leaves(program.compiled.args_info)]
