"""Architecture-aware FLOPs (multiply-accumulates) of channel-pruned CNNs.

Counts the multiply-accumulates (MACs) of every convolution and linear layer; BatchNorm, activations,
pooling and residual additions are not counted (the usual convention of CIFAR FLOPs tables, where
"FLOPs" means MACs). A conv with surviving input channels C_in', output channels C_out', kernel
kh x kw and output map H x W costs H W kh kw C_in' C_out'; a depthwise conv costs H W kh kw C'.
Surviving channels come from the channel graph (`redundax.prune.graph`): a residual-stream channel
survives while any block writes it (residual coupling), a depthwise channel only while both it and
the conv feeding it survive (depthwise cascade), and every reader of a space loses the input channels
its writers lost. A space left with no channel counts one (the all-zero channel the shrunk network
keeps, `redundax.prune.graph.kept_channels`), so the count equals the MACs of the physically shrunk
network (`redundax.prune.channels.shrink`), whose measured latency `redundax.prune.latency` reports.

Reference numbers at full width, 32x32x3 inputs, 10 classes (checked against hand counts in tests):
CIFAR ResNet-18 555.42M MACs (0.56 GMACs; 100 classes: 555.47M).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from redundax.prune import graph as graph_lib


@dataclasses.dataclass(frozen=True)
class ConvCost:
    name: str
    kernel: tuple[int, int]
    out_hw: tuple[int, int]
    depthwise: bool
    src: str
    dst: str


@dataclasses.dataclass(frozen=True)
class FlopsModel:
    """Static shape facts needed to count MACs under any masks."""

    convs: tuple[ConvCost, ...]
    dense: tuple[tuple[str, str, int], ...]  # (name, src space, out features)


def conv_output_hw(model, graph: graph_lib.ChannelGraph, image_shape: Sequence[int]):
    """`{unit: (H, W)}` output map sizes for one `image_shape` = (H, W, C) input (shape-only pass)."""
    if len(image_shape) != 3:
        raise ValueError(f"`image_shape` must be (H, W, C); got {tuple(image_shape)}.")
    gdef, state = nnx.split(nnx.view(model, use_running_average=True))

    def fwd(state, x):
        m = nnx.merge(gdef, state)
        return nnx.capture(m, nnx.Intermediate, method_outputs=nnx.Intermediate)(x)[1]

    inter = jax.eval_shape(fwd, state, jax.ShapeDtypeStruct((1, *image_shape), jnp.float32))
    flat = captured(inter)
    out = {}
    for u in graph.units:
        key = (*u.conv, "__call__")
        if key not in flat:
            raise ValueError(
                f"conv output of {u.name} was not captured; is it an nnx.Conv called "
                "in the model's forward pass?"
            )
        out[u.name] = (int(flat[key].shape[-3]), int(flat[key].shape[-2]))
    return out


def captured(inter) -> dict:
    """Flatten `nnx.capture` intermediates to `{path: first captured value}`."""
    out = {}
    for key, var in nnx.to_flat_state(inter):
        v = var.get_value() if hasattr(var, "get_value") else var
        out[tuple(key)] = v[0] if isinstance(v, tuple | list) else v
    return out


def flops_model(model, graph: graph_lib.ChannelGraph, image_shape: Sequence[int]) -> FlopsModel:
    hw = conv_output_hw(model, graph, image_shape)
    convs = []
    for u in graph.units:
        conv = graph_lib.get_path(model, u.conv)
        k = tuple(int(v) for v in conv.kernel_size)
        convs.append(ConvCost(u.name, k, hw[u.name], u.depthwise, u.src, u.dst))
    dense = tuple(
        (d.name, d.src, int(graph_lib.get_path(model, d.path).out_features)) for d in graph.dense
    )
    return FlopsModel(tuple(convs), dense)


def count_macs(
    fm: FlopsModel, graph: graph_lib.ChannelGraph, masks: Mapping[str, np.ndarray] | None = None
) -> dict[str, int]:
    """Per-layer MACs and `"total"` under `masks` (None: the unpruned network)."""
    masks = graph_lib.full_masks(graph) if masks is None else masks
    live = {k: int(v.sum()) for k, v in graph_lib.kept_channels(graph, masks).items()}
    out: dict[str, int] = {}
    for c in fm.convs:
        hw = c.out_hw[0] * c.out_hw[1] * c.kernel[0] * c.kernel[1]
        out[c.name] = hw * live[c.dst] if c.depthwise else hw * live[c.src] * live[c.dst]
    for name, src, n_out in fm.dense:
        out[name] = live[src] * n_out
    out["total"] = sum(out.values())
    return out


def macs(model, image_shape: Sequence[int], masks=None, graph=None) -> int:
    """Total MACs of `model` on one `image_shape` input (H, W, C), optionally under `masks`."""
    graph = graph_lib.channel_graph(model) if graph is None else graph
    return count_macs(flops_model(model, graph, image_shape), graph, masks)["total"]


def count_params(model) -> int:
    return int(sum(np.size(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))))
