"""Channel dependency graphs of CNNs: which conv writes and reads which channel space.

Structured channel pruning removes output channels of convolutions, but what a removal saves depends on
the architecture (Safaai et al., App. C: FLOPs "accounting for output-channel removal and cascading
input-channel reduction through depthwise convolutions and residual connections"). A `ChannelGraph`
states it explicitly:

- a *unit* is a conv followed by BatchNorm; it reads channel space `src` and writes space `dst`;
- a *space* is a set of channels shared by its writers and readers; its rule says which channels
  survive given the writers' masks:
  - `"single"`: one writer; the channel lives iff the writer keeps it;
  - `"union"`: residual stream (several writers summed); a channel lives iff any writer keeps it
    (residual coupling: a stream channel is removed only when every block drops it);
  - `"intersect"`: a depthwise conv and the conv feeding it are channel-aligned; a channel lives iff
    every writer keeps it (cascade in both directions);
  - `"follow"`: a depthwise conv reading a space that others read too (a residual stream): its
    output keeps exactly the channels of the space it follows (`Space.follows`); its own masked
    channels are zeroed through BatchNorm but not removed;
  - `"input"`: the image, never pruned;
- a *dense* layer (the classifier) reads one space.

Masks are keyed by unit name (the dotted path of the conv). A masked channel is realised by zeroing
its BatchNorm scale and bias, which makes the unit's output on that channel exactly zero in both
train and eval mode; `redundax.prune.channels.shrink` then slices every array to the surviving
channels of its spaces and gives a smaller dense network with identical outputs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from flax import nnx

Path = tuple[Any, ...]
RULES = ("single", "union", "intersect", "follow", "input")


@dataclasses.dataclass(frozen=True)
class Unit:
    """A conv -> BatchNorm pair: `conv` and `bn` are attribute paths from the model root."""

    name: str
    conv: Path
    bn: Path
    src: str
    dst: str
    depthwise: bool = False


@dataclasses.dataclass(frozen=True)
class Space:
    name: str
    width: int
    rule: str
    follows: str | None = None


@dataclasses.dataclass(frozen=True)
class Dense:
    """A linear layer reading space `src` (its kernel is `(src width, out)`)."""

    name: str
    path: Path
    src: str


@dataclasses.dataclass(frozen=True)
class ChannelGraph:
    units: tuple[Unit, ...]
    spaces: Mapping[str, Space]
    dense: tuple[Dense, ...]

    def unit(self, name: str) -> Unit:
        for u in self.units:
            if u.name == name:
                return u
        raise ValueError(f"no unit named {name!r}; units are {[u.name for u in self.units]}.")

    @property
    def names(self) -> list[str]:
        return [u.name for u in self.units]

    def writers(self, space: str) -> list[Unit]:
        return [u for u in self.units if u.dst == space]

    def producer(self, unit: Unit) -> Unit | None:
        """The single non-depthwise unit whose output `unit` reads directly, if there is one."""
        sp = self.spaces[unit.src]
        if unit.depthwise or sp.rule != "single":
            return None
        w = self.writers(unit.src)
        return w[0] if len(w) == 1 else None


def get_path(model: Any, path: Path) -> Any:
    obj = model
    for p in path:
        obj = obj[p] if isinstance(p, int) else getattr(obj, p)
    return obj


def dotted(path: Path) -> str:
    return ".".join(str(p) for p in path)


class _Builder:
    def __init__(self, in_channels: int):
        self.units: list[Unit] = []
        self.spaces: dict[str, Space] = {"input": Space("input", in_channels, "input")}
        self.dense: list[Dense] = []

    def space(self, name: str, width: int, rule: str, follows: str | None = None) -> str:
        if name in self.spaces:
            old = self.spaces[name]
            if old.width != width or (old.rule != rule and old.rule != "single"):
                raise ValueError(f"space {name!r} redefined: {old} vs width {width}, rule {rule}.")
        self.spaces[name] = Space(name, width, rule, follows)
        return name

    def conv(
        self, model, prefix: Path, src: str, dst: str, *, depthwise=False, conv="conv", bn="bn"
    ) -> Unit:
        u = Unit(dotted((*prefix, conv)), (*prefix, conv), (*prefix, bn), src, dst, depthwise)
        c = get_path(model, u.conv)
        if c.out_features != self.spaces[dst].width:
            raise ValueError(
                f"{u.name}: {c.out_features} outputs but space {dst!r} has "
                f"{self.spaces[dst].width} channels."
            )
        self.units.append(u)
        return u

    def build(self) -> ChannelGraph:
        return ChannelGraph(tuple(self.units), dict(self.spaces), tuple(self.dense))


def vgg_graph(model) -> ChannelGraph:
    """`redundax.models.vgg.VGG`: a chain of single spaces."""
    b = _Builder(model.features[0].conv.in_features)
    src = "input"
    for i, layer in enumerate(model.features):
        dst = b.space(f"features.{i}", layer.conv.out_features, "single")
        b.conv(model, ("features", i), src, dst)
        src = dst
    b.dense.append(Dense("classifier", ("classifier",), src))
    return b.build()


def mobilenet_graph(model) -> ChannelGraph:
    """`redundax.models.mobilenet.MobileNetV2`: depthwise (intersect) and residual (union) spaces."""
    b = _Builder(model.stem.conv.in_features)
    cur = b.space("stem", model.stem.conv.out_features, "single")
    b.conv(model, ("stem",), "input", cur)
    stage = 0
    for i, blk in enumerate(model.blocks):
        p = ("blocks", i)
        if blk.expand is not None:
            hidden = b.space(f"blocks.{i}.hidden", blk.expand.conv.out_features, "intersect")
            b.conv(model, (*p, "expand"), cur, hidden)
            b.conv(model, (*p, "depthwise"), hidden, hidden, depthwise=True)
        elif blk.use_residual or b.spaces[cur].rule == "union":
            # the input stays in use (residual add): the depthwise output follows its channels
            hidden = b.space(f"blocks.{i}.depthwise", b.spaces[cur].width, "follow", cur)
            b.conv(model, (*p, "depthwise"), cur, hidden, depthwise=True)
        else:  # the depthwise conv is the only reader of `cur`: channel-aligned cascade
            hidden = b.space(cur, b.spaces[cur].width, "intersect")
            b.conv(model, (*p, "depthwise"), hidden, hidden, depthwise=True)
        if blk.use_residual:
            out = b.space(cur, b.spaces[cur].width, "union")
        else:
            stage += 1
            out = b.space(f"stage{stage}", blk.project.conv.out_features, "single")
        b.conv(model, (*p, "project"), hidden, out)
        cur = out
    head = b.space("head", model.head.conv.out_features, "single")
    b.conv(model, ("head",), cur, head)
    b.dense.append(Dense("classifier", ("classifier",), head))
    return b.build()


def _fix_union_rules(b: _Builder) -> None:
    """A space written by more than one (non-depthwise) unit is a residual stream: rule "union"."""
    for name, sp in list(b.spaces.items()):
        writers = [u for u in b.units if u.dst == name and not u.depthwise]
        if len(writers) > 1 and sp.rule == "single":
            b.spaces[name] = Space(name, sp.width, "union")


def resnet_graph(model) -> ChannelGraph:
    """CIFAR ResNet (`redundax.models.resnet`): per stage one residual (union) space written by the
    stem or downsampling shortcut and by every block's last conv; block-internal spaces are single.
    """
    b = _Builder(model.stem.conv.in_features)
    cur = b.space("stem", model.stem.conv.out_features, "single")
    b.conv(model, ("stem",), "input", cur)
    for si, stage in enumerate(model.stages):
        for bi, blk in enumerate(stage):
            p = ("stages", si, bi)
            mid = b.space(dotted((*p, "conv1")), blk.conv1.conv.out_features, "single")
            b.conv(model, (*p, "conv1"), cur, mid)
            if blk.shortcut is not None:
                out = b.space(f"stage{si}.{bi}", blk.shortcut.conv.out_features, "single")
                b.conv(model, (*p, "shortcut"), cur, out)
            else:
                out = cur
            b.conv(model, (*p, "conv2"), mid, out)
            cur = out
    _fix_union_rules(b)
    b.dense.append(Dense("classifier", ("classifier",), cur))
    return b.build()


def channel_graph(model) -> ChannelGraph:
    """The `ChannelGraph` of a supported model (VGG, MobileNetV2, CIFAR ResNet)."""
    from redundax.models.mobilenet import MobileNetV2
    from redundax.models.vgg import VGG

    if isinstance(model, VGG):
        return vgg_graph(model)
    if isinstance(model, MobileNetV2):
        return mobilenet_graph(model)
    try:
        from redundax.models import resnet
    except ImportError:
        resnet = None
    if resnet is not None and isinstance(model, resnet.ResNet):
        return resnet_graph(model)
    raise ValueError(
        f"no channel graph for {type(model).__name__}; supported: VGG, MobileNetV2, CIFAR ResNet. "
        "Build one with `redundax.prune.graph.ChannelGraph` for other architectures."
    )


# ------------------------------------------------------------------------------------------------
# Masks


def full_masks(graph: ChannelGraph) -> dict[str, np.ndarray]:
    return {u.name: np.ones(graph.spaces[u.dst].width, bool) for u in graph.units}


def check_masks(graph: ChannelGraph, masks: Mapping[str, Any]) -> dict[str, np.ndarray]:
    out = {}
    for u in graph.units:
        if u.name not in masks:
            raise ValueError(f"`masks` lacks unit {u.name!r}; pass one boolean vector per unit.")
        m = np.asarray(masks[u.name], bool)
        if m.shape != (graph.spaces[u.dst].width,):
            raise ValueError(
                f"mask of {u.name!r} must have shape ({graph.spaces[u.dst].width},); got {m.shape}."
            )
        out[u.name] = m
    extra = set(masks) - set(out)
    if extra:
        raise ValueError(f"`masks` has unknown units {sorted(extra)}.")
    return out


def alive(graph: ChannelGraph, masks: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Surviving channels of every space under the space rules (module docstring)."""
    masks = check_masks(graph, masks)
    out = {}
    for name, sp in graph.spaces.items():
        ws = [masks[u.name] for u in graph.writers(name)]
        if sp.rule == "follow":
            out[name] = out[sp.follows].copy()
        elif sp.rule == "input" or not ws:
            out[name] = np.ones(sp.width, bool)
        elif sp.rule == "intersect":
            out[name] = np.logical_and.reduce(ws)
        else:  # single / union
            out[name] = np.logical_or.reduce(ws)
    return out


def kept_channels(graph: ChannelGraph, masks: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Channels of every space that the physically shrunk network keeps (boolean per space).

    The surviving channels (`alive`), except that a space left with none keeps its channel 0: a conv
    cannot have zero channels, and that channel is masked in all its writers (zero BatchNorm scale
    and bias), so it carries zeros and the shrunk network still computes what the masked one does.
    A "follow" space keeps what the space it follows keeps.
    """
    live = alive(graph, masks)
    for name, sp in graph.spaces.items():
        if sp.rule == "follow":
            live[name] = live[sp.follows].copy()
        elif not live[name].any():
            live[name][0] = True
    return live


def effective_masks(graph: ChannelGraph, masks: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Masks after cascading: writers of an intersect space all drop a channel any of them drops."""
    masks = check_masks(graph, masks)
    live = alive(graph, masks)
    return {
        u.name: live[u.dst].copy() if graph.spaces[u.dst].rule == "intersect" else masks[u.name]
        for u in graph.units
    }


def unit_channels(graph: ChannelGraph) -> dict[str, int]:
    return {u.name: graph.spaces[u.dst].width for u in graph.units}


def apply_masks(model, graph: ChannelGraph, masks: Mapping[str, Any]):
    """Zero the BatchNorm scale and bias of masked channels in place (effective masks); returns model."""
    eff = effective_masks(graph, masks)
    for u in graph.units:
        bn = get_path(model, u.bn)
        keep = np.asarray(eff[u.name], np.float32)
        for attr in ("scale", "bias"):
            var = getattr(bn, attr, None)
            if var is not None:
                var.set_value(var[...] * keep.astype(var[...].dtype))
    return model


def mask_multipliers(model, graph: ChannelGraph, masks: Mapping[str, Any]) -> nnx.State:
    """A pytree like `nnx.state(model, nnx.Param)`: 1 everywhere, 0 at masked BN scale/bias entries.

    Multiplying parameters by it after each optimizer step keeps masked channels pruned while
    fine-tuning (projected SGD).
    """
    return multipliers_like(nnx.state(model, nnx.Param), graph, masks)


def multipliers_like(params: nnx.State, graph: ChannelGraph, masks: Mapping[str, Any]) -> nnx.State:
    """`mask_multipliers` for an already split parameter state `params`."""
    import jax
    import jax.numpy as jnp

    mult = jax.tree.map(jnp.ones_like, params)
    eff = effective_masks(graph, masks)
    flat = dict(nnx.to_flat_state(mult))
    for u in graph.units:
        keep = jnp.asarray(eff[u.name], jnp.float32)
        for attr in ("scale", "bias"):
            key = (*u.bn, attr)
            if key in flat:
                flat[key] = flat[key].replace(keep.astype(flat[key][...].dtype))
    return nnx.from_flat_state(flat)


def spaces_read_by(graph: ChannelGraph, space: str) -> Sequence[Unit]:
    return [u for u in graph.units if u.src == space]
