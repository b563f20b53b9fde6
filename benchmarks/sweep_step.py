"""Benchmark: the member axis of a vectorised MAE sweep, per member-step against a single member.

    python benchmarks/sweep_step.py                          # tiny (digits) model, 1, 3, 7, 21 members
    python benchmarks/sweep_step.py --size small --members 1,3 --batch 64
    python benchmarks/sweep_step.py --preset smoke --members 1,2,4 --chunks 1,2,3

A sweep (``redundax.sweep``) trains its members as one ``jit(vmap(step))`` over stacked parameters,
optimiser states and masking keys, with the batch shared. This script times that vectorised step
(eq. 2's objective with the R_spec penalty, AdamW update; the step of ``benchmarks/mae_step.py``)
for each member count M and divides by M, against the reference in the same run: the single-member
``jit(step)`` that the sequential sweep runs M times. It also times the members in chunks,
``jit(lax.map(vmap(step), batch_size=c))`` (``--chunks``; ``redundax.sweep.vectorized``, what
``sweep.member_chunk=c`` runs): ``c`` members at a time, one loop over the chunks inside one
program. All cases are visited in turn in every round (interleaved
medians), so load changes hit them alike.

Ratio ``vmap/single`` = (vectorised step time / M) / single-member step time: below 1 the member
axis brings a gain (fewer dispatched kernels per member). The member axis does not make matrix
products larger per member (every member has its own weights, so the products stay as many and as
large, batched), and it multiplies every activation by M: ``temp MB/member`` is XLA's temporary
buffer size of the compiled program (``memory_analysis``) per member of one chunk, the working
set that decides whether a step stays in the CPU's caches.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

import jax
import jax.numpy as jnp
import optax
from flax import nnx

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from mae_step import interleaved_medians, jax_step_fn

from configs import mae as mae_configs
from redundax import mae_sweep, sweep
from redundax.models.mae import MAE, mae_config
from redundax.train import host_memory


def member_runner(cfg, batch: int, members: int, chunk: int | None = None):
    """``(run, temp_bytes)``: a closure running one jitted step of ``members`` stacked members
    (``jit(vmap(step))``; ``chunk``: ``jit(lax.map(vmap(step), batch_size=chunk))``; members=0:
    the single-member ``jit(step)``) and the compiled program's temporary buffer bytes."""
    graphdef, params = nnx.split(MAE(cfg, rngs=nnx.Rngs(0)))
    tx = optax.adamw(1e-4, b1=0.9, b2=0.95, weight_decay=0.05)
    opt_state = tx.init(params)
    step = jax_step_fn(graphdef, tx, penalty=True)
    images = jax.random.normal(
        jax.random.key(1), (batch, cfg.image_size, cfg.image_size, cfg.in_channels)
    )
    keys = jax.random.key(2)
    if members:
        params, opt_state = jax.tree.map(lambda x: jnp.stack([x] * members), (params, opt_state))
        keys = jax.random.split(keys, members)
        # the sweep's own member map (`sweep.member_chunk`): one vmap, or lax.map over chunks
        step = sweep.vectorized(step, (0, 0, None, 0), chunk if chunk and chunk < members else None)

    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, opt_state, images, keys).compile()
    memory = compiled.memory_analysis()
    temp = getattr(memory, "temp_size_in_bytes", None) if memory is not None else None
    state = [params, opt_state]

    def run():
        state[0], state[1], loss = compiled(state[0], state[1], images, keys)
        jax.block_until_ready(loss)

    return run, temp


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="tiny")
    ap.add_argument(
        "--preset",
        default=None,
        help="a configs/mae.py preset (digits, smoke): its model and batch size (over --size)",
    )
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--members", default="1,3,7,21")
    ap.add_argument("--chunks", default="3", help="chunk sizes c for the largest member count")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument(
        "--out",
        default=str(pathlib.Path(__file__).resolve().parent / "results" / "sweep_step.json"),
    )
    args = ap.parse_args()
    # the vectorised MAE sweep's host memory setting (REDUNDAX_KEEP_HOST_MEMORY=0: JAX's defaults)
    host_memory.keep_host_memory()
    counts = [int(m) for m in args.members.split(",")]
    chunks = [int(c) for c in args.chunks.split(",") if c]
    if not counts or min(counts) < 1 or any(c < 1 for c in chunks):
        raise ValueError(
            f"--members and --chunks must list positive counts; got {args.members!r}, "
            f"{args.chunks!r}."
        )
    if args.preset is None:
        cfg = mae_config(args.size)
    else:
        config = mae_configs.get_config(args.preset)
        cfg, args.batch = mae_sweep.model_config(config), config.data.batch_size
    m_max = max(counts)
    layouts = {"single": (0, None)}
    layouts.update({f"vmap_{m}": (m, None) for m in counts})
    layouts.update({f"chunks_{c}_of_{m_max}": (m_max, c) for c in chunks if c < m_max})
    cases, temp = {}, {}
    for name, (m, c) in layouts.items():
        cases[name], temp[name] = member_runner(cfg, args.batch, m, c)
    med = {k: 1e3 * v for k, v in interleaved_medians(cases, args.repeats).items()}
    rows = []
    head = (
        f"{'layout':>14} {'members':>8} {'ms/step':>10} {'ms/member-step':>15} {'vmap/single':>12}"
    )
    print(head + f" {'temp MB/member':>15}")
    for name, (m, c) in layouts.items():
        per = med[name] / max(m, 1)
        t = temp[name] / 1e6 / (min(c or m, m) or 1) if temp[name] is not None else float("nan")
        rows.append(
            {
                "layout": name,
                "members": max(m, 1),
                "chunk": c,
                "ms_per_step": med[name],
                "ms_per_member_step": per,
                "vmap_over_single": per / med["single"],
                "temp_mb_per_member": t,
            }
        )
        print(
            f"{name:>14} {max(m, 1):8d} {med[name]:10.2f} {per:15.2f} "
            f"{per / med['single']:12.2f} {t:15.2f}"
        )
    report = {
        "backend": jax.default_backend(),
        "device": jax.devices()[0].device_kind,
        "jax": jax.__version__,
        "size": args.size if args.preset is None else None,
        "preset": args.preset,
        "batch": args.batch,
        "repeats": args.repeats,
        "load_avg": os.getloadavg(),
        "single_ms_per_step": med["single"],
        "rows": rows,
    }
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
