"""Benchmark: the member axis of a vectorised MAE sweep, per member-step against a single member.

    python benchmarks/sweep_step.py                          # tiny (digits) model, 1, 3, 7, 21 members
    python benchmarks/sweep_step.py --size small --members 1,3 --batch 64

A sweep (``redundax.sweep``) trains its members as one ``jit(vmap(step))`` over stacked parameters,
optimiser states and masking keys, with the batch shared. This script times that vectorised step
(eq. 2's objective with the R_spec penalty, AdamW update; the step of ``benchmarks/mae_step.py``)
for each member count M and divides by M, against the reference in the same run: the single-member
``jit(step)`` that the sequential sweep runs M times. All cases are visited in turn in every round
(interleaved medians), so load changes hit them alike.

Ratio ``vmap/single`` = (vectorised step time / M) / single-member step time: below 1 the member
axis brings a compute gain (larger, cheaper matrix products and fewer dispatched kernels per member).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

import jax

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from mae_step import interleaved_medians, jax_runner

from redundax.models.mae import mae_config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--members", default="1,3,7,21")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument(
        "--out",
        default=str(pathlib.Path(__file__).resolve().parent / "results" / "sweep_step.json"),
    )
    args = ap.parse_args()
    counts = [int(m) for m in args.members.split(",")]
    if not counts or min(counts) < 1:
        raise ValueError(f"--members must list positive member counts; got {args.members!r}.")
    cfg = mae_config(args.size)
    cases = {"single": jax_runner(cfg, args.batch, penalty=True)}
    for m in counts:
        cases[f"vmap_{m}"] = jax_runner(cfg, args.batch, penalty=True, members=m)
    med = {k: 1e3 * v for k, v in interleaved_medians(cases, args.repeats).items()}
    rows = []
    print(f"{'members':>8} {'ms/step':>10} {'ms/member-step':>15} {'vmap/single':>12}")
    print(f"{'single':>8} {med['single']:10.2f} {med['single']:15.2f} {1.0:12.2f}")
    for m in counts:
        per = med[f"vmap_{m}"] / m
        rows.append(
            {
                "members": m,
                "ms_per_step": med[f"vmap_{m}"],
                "ms_per_member_step": per,
                "vmap_over_single": per / med["single"],
            }
        )
        print(f"{m:8d} {med[f'vmap_{m}']:10.2f} {per:15.2f} {per / med['single']:12.2f}")
    report = {
        "backend": jax.default_backend(),
        "device": jax.devices()[0].device_kind,
        "jax": jax.__version__,
        "size": args.size,
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
