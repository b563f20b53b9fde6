"""Benchmark: one MAE training step, redundax (JAX/Flax NNX/optax) against a same-size PyTorch MAE.

    python benchmarks/mae_step.py                  # tiny (digits 8x8, patch 2) and small (CIFAR)
    python benchmarks/mae_step.py --sizes small --batch 256 --repeats 10
    python benchmarks/mae_step.py --threads 1      # both frameworks on one core
    python benchmarks/mae_step.py --default-malloc # glibc's malloc defaults (see below)

Measured in one run, on the same machine, batch and mask ratio. Every case gets ``--warmup``
untimed steps, then ``--repeats`` rounds call every case once in turn, JAX and torch alternating
(jax, torch, jax+R_spec, torch+R_spec, ...), so that a change in machine load hits both alike;
before each timed step the process sleeps ``--gap`` seconds (untimed) so that the previous step's
worker threads, which spin-wait before they sleep, have gone idle. Reported: the median step time
of each case and, for each ratio, the median and interquartile range of the per-round ratios.
``--threads N`` (default: every CPU the process may run on) restricts the process to N CPUs before
JAX's CPU backend starts, which sizes XLA's thread pool, and sets ``torch.set_num_threads(N)``, so
both frameworks run N threads. The JSON records the load average before each size and at the
start and end: on a loaded machine the multi-threaded torch step (OpenMP barriers) slows far more
than XLA's, so compare runs at the same load, or use ``--threads 1``. Every step is forward +
backward + AdamW update:

  jax            redundax MAE step, plain reconstruction loss (``penalty=False``)
  jax+R_spec     the same step with eq. 2's penalty lambda * R_spec(Z) (lambda = 0.01)
  torch          a PyTorch MAE built the way the official MAE code builds it (timm-style pre-norm
                 blocks, conv patch embedding, fixed 2-D sin-cos positions, random masking by argsort
                 of noise, masked-patch MSE), written here in plain torch, with torch.optim.AdamW
  torch+R_spec   the torch step with the same penalty through ``torch.linalg.eigvalsh``
  sweep          (tiny only) 21 members: one ``jit(vmap(step))`` against 21 single-member steps

The process first applies :func:`redundax.train.host_memory.keep_host_memory`, as the MAE
experiment does for its vectorised sweep: glibc then reuses freed host memory instead of mapping
each step's temporaries afresh (on the small model 140,000 page faults per JAX step without it). The
setting is process-wide, so the torch steps run under it too; ``--default-malloc`` leaves glibc
at its defaults for a comparison.

Ratios: torch time / jax time (> 1: redundax is faster), penalty overhead jax+R_spec / jax, and
vectorised / sequential time per member-step. Before timing, the torch model is loaded with the JAX
model's weights and given the same masking noise, and the two losses are compared (``parity``).

torch is optional (extra ``bench``). On Python 3.11, ``pip install torch==2.13.0`` installs a CPU
build; without torch the JAX rows are still measured and the torch rows are reported as missing.
On a GPU (``jax.default_backend() == "gpu"``) the script also times ViT-Base (patch 16, 224x224,
bfloat16) and reports images/s and model FLOPs utilisation (XLA's FLOP count of the compiled step
over the device's peak bfloat16 rate).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from redundax.models.mae import MAE, mae_config, objective
from redundax.train import host_memory

MASK_RATIO = 0.75
LAMBDA = 0.01
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12}


# ------------------------------------------------------------------------------------ timing
def _median_time(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def interleaved_medians(cases: dict, repeats: int, inner: int = 3) -> dict[str, float]:
    """Median seconds per call of each case over ``repeats`` rounds. Every round visits the cases
    in turn (so a change in machine load affects them alike); each visit makes one untimed call
    (switching cases disturbs caches and thread pools) and then times ``inner`` calls."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            fn()
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            times[name].append((time.perf_counter() - t0) / inner)
    return {name: statistics.median(t) for name, t in times.items()}


def round_robin(
    cases: dict, repeats: int, warmup: int = 2, gap: float = 0.05
) -> dict[str, list[float]]:
    """Seconds of each timed call: ``warmup`` untimed calls per case, then ``repeats`` rounds that
    call every case once in turn (A, B, A, B, ...), so that each round's calls see the same machine
    load and round ``i``'s times form a pair. Before each timed call the process sleeps ``gap``
    seconds (untimed), so the previous call's worker threads (OpenMP's and XLA's pools spin-wait
    before they sleep) have gone idle and do not take cores from the next one."""
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            time.sleep(gap)
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def ratio_stats(num: list[float], den: list[float]) -> dict[str, float]:
    """Median and interquartile range of the per-round ratios ``num[i] / den[i]``."""
    ratios = np.asarray(num) / np.asarray(den)
    q1, med, q3 = np.percentile(ratios, [25, 50, 75])
    return {"median": float(med), "q1": float(q1), "q3": float(q3)}


def use_threads(threads: int) -> int:
    """Restrict this process to its first ``threads`` CPUs (XLA's CPU thread pool is sized by the
    CPUs the process may run on when the backend starts) and give torch as many threads."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if not cpus:  # no affinity control (macOS): both frameworks use their defaults
        return os.cpu_count() or 1
    if threads <= 0 or threads > len(cpus):
        raise ValueError(f"--threads must lie in [1, {len(cpus)}] (CPUs available); got {threads}.")
    os.sched_setaffinity(0, cpus[:threads])
    return threads


# ------------------------------------------------------------------------------------ JAX side
def jax_step_fn(graphdef, tx, penalty: bool):
    def step(params, opt_state, images, key):
        def loss_fn(p):
            return objective(
                nnx.merge(graphdef, p), images, key, LAMBDA, mask_ratio=MASK_RATIO, penalty=penalty
            )[0]

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def jax_runner(cfg, batch: int, penalty: bool, members: int = 0):
    """A closure running one jitted step (one vectorised step of ``members`` members if > 0)."""
    model = MAE(cfg, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    tx = optax.adamw(1e-4, b1=0.9, b2=0.95, weight_decay=0.05)
    opt_state = tx.init(params)
    step = jax_step_fn(graphdef, tx, penalty)
    images = jax.random.normal(
        jax.random.key(1), (batch, cfg.image_size, cfg.image_size, cfg.in_channels)
    )
    if members:
        params = jax.tree.map(lambda x: jnp.stack([x] * members), params)
        opt_state = jax.tree.map(lambda x: jnp.stack([x] * members), opt_state)
        step = jax.vmap(step, in_axes=(0, 0, None, 0))
        keys = jax.random.split(jax.random.key(2), members)
    else:
        keys = jax.random.key(2)
    step = jax.jit(step, donate_argnums=(0, 1))
    state = [params, opt_state]

    def run():
        state[0], state[1], loss = step(state[0], state[1], images, keys)
        jax.block_until_ready(loss)

    return run


# ------------------------------------------------------------------------------------ torch side
def _sincos_2d_numpy(dim: int, grid: int) -> np.ndarray:
    """2-D sin-cos positions laid out as in the MAE reference code (first half: column)."""

    def one_d(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    gw, gh = np.meshgrid(np.arange(grid, dtype=np.float64), np.arange(grid, dtype=np.float64))
    return np.concatenate([one_d(dim // 2, gw), one_d(dim // 2, gh)], axis=1).astype(np.float32)


def build_torch_mae(cfg):
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Attention(nn.Module):
        def __init__(self, dim, heads):
            super().__init__()
            self.heads = heads
            self.qkv = nn.Linear(dim, 3 * dim)
            self.proj = nn.Linear(dim, dim)

        def forward(self, x):
            b, t, d = x.shape
            qkv = self.qkv(x).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
            out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
            return self.proj(out.transpose(1, 2).reshape(b, t, d))

    class Block(nn.Module):
        def __init__(self, dim, heads, ratio):
            super().__init__()
            self.norm1 = nn.LayerNorm(dim, eps=1e-6)
            self.attn = Attention(dim, heads)
            self.norm2 = nn.LayerNorm(dim, eps=1e-6)
            hidden = int(dim * ratio)
            self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

        def forward(self, x):
            x = x + self.attn(self.norm1(x))
            return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))

    class TorchMAE(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.c = c
            d, dd, p = c.embed_dim, c.decoder_embed_dim, c.patch_size
            self.patch_embed = nn.Conv2d(c.in_channels, d, p, stride=p)
            self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
            zero = np.zeros((1, d), np.float32)
            self.register_buffer(
                "pos", torch.from_numpy(np.concatenate([zero, _sincos_2d_numpy(d, c.grid)])[None])
            )
            self.blocks = nn.ModuleList(Block(d, c.num_heads, c.mlp_ratio) for _ in range(c.depth))
            self.norm = nn.LayerNorm(d, eps=1e-6)
            self.decoder_embed = nn.Linear(d, dd)
            self.mask_token = nn.Parameter(torch.zeros(1, 1, dd))
            zero = np.zeros((1, dd), np.float32)
            self.register_buffer(
                "dpos", torch.from_numpy(np.concatenate([zero, _sincos_2d_numpy(dd, c.grid)])[None])
            )
            self.decoder_blocks = nn.ModuleList(
                Block(dd, c.decoder_num_heads, c.mlp_ratio) for _ in range(c.decoder_depth)
            )
            self.decoder_norm = nn.LayerNorm(dd, eps=1e-6)
            self.decoder_pred = nn.Linear(dd, p * p * c.in_channels)
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    nn.init.xavier_uniform_(m.weight)
                    nn.init.zeros_(m.bias)
            w = self.patch_embed.weight.data
            nn.init.xavier_uniform_(w.view(w.shape[0], -1))
            nn.init.normal_(self.cls_token, std=0.02)
            nn.init.normal_(self.mask_token, std=0.02)

        def patchify(self, imgs):
            p, g = self.c.patch_size, self.c.grid
            x = imgs.reshape(imgs.shape[0], imgs.shape[1], g, p, g, p)
            return torch.einsum("nchpwq->nhwpqc", x).reshape(imgs.shape[0], g * g, -1)

        def forward(self, imgs, mask_ratio, noise=None):
            x = self.patch_embed(imgs).flatten(2).transpose(1, 2) + self.pos[:, 1:]
            n, length, d = x.shape
            keep = int(length * (1 - mask_ratio))
            if noise is None:
                noise = torch.rand(n, length)
            ids_shuffle = torch.argsort(noise, dim=1)
            ids_restore = torch.argsort(ids_shuffle, dim=1)
            x = torch.gather(x, 1, ids_shuffle[:, :keep, None].expand(-1, -1, d))
            mask = torch.ones(n, length)
            mask[:, :keep] = 0
            mask = torch.gather(mask, 1, ids_restore)
            x = torch.cat([(self.cls_token + self.pos[:, :1]).expand(n, -1, -1), x], dim=1)
            for blk in self.blocks:
                x = blk(x)
            latent = self.norm(x)
            y = self.decoder_embed(latent)
            tokens = torch.cat(
                [y[:, 1:], self.mask_token.expand(n, length + 1 - y.shape[1], -1)], dim=1
            )
            tokens = torch.gather(tokens, 1, ids_restore[..., None].expand(-1, -1, y.shape[2]))
            y = torch.cat([y[:, :1], tokens], dim=1) + self.dpos
            for blk in self.decoder_blocks:
                y = blk(y)
            pred = self.decoder_pred(self.decoder_norm(y))[:, 1:]
            per_patch = ((pred - self.patchify(imgs)) ** 2).mean(-1)
            return (per_patch * mask).sum() / mask.sum(), latent

    return TorchMAE(cfg)


def torch_spectral_redundancy(z):
    """R_spec = 1 - exp(H) / D of the covariance spectrum (Def. 2), eigenvalues via eigvalsh."""
    import torch

    zc = z - z.mean(0, keepdim=True)
    lam = torch.linalg.eigvalsh(zc.T @ zc / (z.shape[0] - 1)).clamp_min(0)
    p = lam / lam.sum()
    h = -(torch.where(p > 0, p * torch.log(p.clamp_min(1e-30)), torch.zeros_like(p))).sum()
    return 1 - torch.exp(h) / z.shape[1]


def load_jax_weights(tmodel, params) -> None:
    """Copy the redundax MAE's parameters into the torch model (names and layouts mapped)."""
    import torch

    c = tmodel.c
    sd = {}
    for path, value in jax.tree_util.tree_leaves_with_path(params):
        name = jax.tree_util.keystr(path, simple=True, separator=".").removesuffix(".value")
        value = np.array(value)
        if name == "patch_embed.proj.kernel":  # (p*p*C, D) -> conv (D, C, p, p)
            name = "patch_embed.weight"
            value = value.reshape(c.patch_size, c.patch_size, c.in_channels, -1)
            value = value.transpose(3, 2, 0, 1)
        elif name.endswith(".kernel"):  # (in, out) -> (out, in)
            name, value = name.removesuffix(".kernel") + ".weight", value.T
        name = (
            name.replace("patch_embed.proj.", "patch_embed.")
            .replace(".mlp.", ".")
            .replace(".scale", ".weight")
        )
        sd[name] = torch.from_numpy(np.ascontiguousarray(value))
    missing = set(dict(tmodel.named_parameters())) - set(sd)
    if missing:
        raise RuntimeError(f"weights not mapped: {sorted(missing)}")
    tmodel.load_state_dict(sd, strict=False)


def parity(cfg, batch: int) -> float:
    """|loss_jax - loss_torch| / loss_jax with shared weights, images and masking noise."""
    import torch

    model = MAE(cfg, rngs=nnx.Rngs(0))
    images = jax.random.normal(
        jax.random.key(1), (batch, cfg.image_size, cfg.image_size, cfg.in_channels)
    )
    key = jax.random.key(3)
    loss_jax = float(model(images, key, MASK_RATIO).loss)
    noise = np.array(jax.random.uniform(key, (batch, cfg.num_patches)))  # random_masking draw
    tmodel = build_torch_mae(cfg)
    load_jax_weights(tmodel, nnx.state(model))
    with torch.no_grad():
        loss_t, _ = tmodel(
            torch.from_numpy(np.asarray(images).transpose(0, 3, 1, 2).copy()),
            MASK_RATIO,
            torch.from_numpy(noise),
        )
    return abs(loss_jax - float(loss_t)) / abs(loss_jax)


def torch_runner(cfg, batch: int, penalty: bool):
    """A closure running one torch training step."""
    import torch

    torch.manual_seed(0)
    model = build_torch_mae(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05)
    images = torch.randn(batch, cfg.in_channels, cfg.image_size, cfg.image_size)

    def run():
        opt.zero_grad(set_to_none=True)
        loss, latent = model(images, MASK_RATIO)
        if penalty:
            loss = loss + LAMBDA * torch_spectral_redundancy(latent[:, 1:].mean(1))
        loss.backward()
        opt.step()

    return run


# ------------------------------------------------------------------------------------ GPU
def gpu_vit_base(batch: int, repeats: int) -> dict:
    cfg = mae_config("base", dtype="bfloat16")
    model = MAE(cfg, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    tx = optax.adamw(1e-4, b1=0.9, b2=0.95, weight_decay=0.05)
    opt_state = tx.init(params)
    step = jax.jit(jax_step_fn(graphdef, tx, penalty=True), donate_argnums=(0, 1))
    images = jax.random.normal(jax.random.key(1), (batch, 224, 224, 3))
    key = jax.random.key(2)
    compiled = step.lower(params, opt_state, images, key).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    flops = float(cost.get("flops", float("nan")))
    state = [params, opt_state]

    def run():
        state[0], state[1], loss = compiled(state[0], state[1], images, key)
        jax.block_until_ready(loss)

    seconds = _median_time(run, repeats)
    kind = jax.devices()[0].device_kind
    peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in kind), float("nan"))
    return {
        "device": kind,
        "batch": batch,
        "seconds_per_step": seconds,
        "images_per_s": batch / seconds,
        "flops_per_step": flops,
        "mfu": flops / seconds / peak,
    }


# ------------------------------------------------------------------------------------ main
def _row_line(size: str, case: str, ms: float, note: str = "") -> str:
    return f"{size:6} {case:14} {ms:10.2f} {note:>34}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="tiny,small")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--gap", type=float, default=0.05, help="untimed sleep before each call (s)")
    ap.add_argument("--members", type=int, default=21)
    ap.add_argument(
        "--threads",
        type=int,
        default=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0,
        help="CPUs for both frameworks (default: every CPU this process may run on)",
    )
    ap.add_argument(
        "--default-malloc",
        action="store_true",
        help="leave the C library's malloc at its defaults (no host_memory.keep_host_memory)",
    )
    ap.add_argument(
        "--out", default=str(pathlib.Path(__file__).resolve().parent / "results" / "mae_step.json")
    )
    args = ap.parse_args()
    # as the MAE experiment does; process-wide, so torch runs under it as well
    kept = host_memory.keep_host_memory(not args.default_malloc)
    threads = use_threads(args.threads)  # before JAX's CPU backend starts
    try:
        import torch

        torch.set_num_threads(threads)
        torch_version = torch.__version__
    except ImportError:
        torch_version = None
        print(
            "torch is not installed, so the PyTorch reference rows are missing. Install it in "
            "a separate environment, e.g. on Python 3.11: `pip install torch==2.13.0` (a CPU "
            "build) next to jax, flax and optax, and run this script there.",
            file=sys.stderr,
        )

    report = {
        "backend": jax.default_backend(),
        "device": jax.devices()[0].device_kind,
        "jax": jax.__version__,
        "torch": torch_version,
        "batch": args.batch,
        "threads": threads,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "gap_s": args.gap,
        "mask_ratio": MASK_RATIO,
        "lambda": LAMBDA,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "keep_host_memory": kept,
        "load_avg_before": os.getloadavg(),
        "sizes": {},
    }
    print(
        f"{threads} thread(s) for XLA and torch; medians of {args.repeats} round-robin rounds; "
        f"host memory kept between steps: {kept}"
    )
    print(f"{'size':6} {'case':14} {'ms/step':>10} {'ratio median [IQR]':>34}")
    for size in args.sizes.split(","):
        cfg = mae_config(size)
        # One round calls every case once, JAX and torch alternating, so a load change hits both
        # alike and round i gives a (torch, jax) pair whose ratio is taken.
        cases = {"jax": jax_runner(cfg, args.batch, False)}
        if torch_version is not None:
            cases["torch"] = torch_runner(cfg, args.batch, False)
        cases["jax_penalty"] = jax_runner(cfg, args.batch, True)
        if torch_version is not None:
            cases["torch_penalty"] = torch_runner(cfg, args.batch, True)
        if size == "tiny" and args.members:
            cases["sweep_vmap"] = jax_runner(cfg, args.batch, True, members=args.members)
        load = os.getloadavg()
        times = round_robin(cases, args.repeats, args.warmup, args.gap)
        med = {k: 1e3 * statistics.median(v) for k, v in times.items()}
        over = ratio_stats(times["jax_penalty"], times["jax"])
        row: dict = {
            "load_avg": load,
            "jax_ms": med["jax"],
            "jax_penalty_ms": med["jax_penalty"],
            "penalty_overhead": over["median"],
            "penalty_overhead_iqr": [over["q1"], over["q3"]],
        }
        print(_row_line(size, "jax", row["jax_ms"]))
        note = f"overhead x{over['median']:.2f} [{over['q1']:.2f}, {over['q3']:.2f}]"
        print(_row_line(size, "jax+R_spec", row["jax_penalty_ms"], note))
        if torch_version is not None:
            row["parity_rel_loss_diff"] = parity(cfg, 8)
            row["torch_ms"], row["torch_penalty_ms"] = med["torch"], med["torch_penalty"]
            tover = ratio_stats(times["torch_penalty"], times["torch"])
            row["torch_penalty_overhead"] = tover["median"]
            row["torch_penalty_overhead_iqr"] = [tover["q1"], tover["q3"]]
            for case, ref in (("torch", "jax"), ("torch_penalty", "jax_penalty")):
                r = ratio_stats(times[case], times[ref])
                key = "torch_over_jax" + ref.removeprefix("jax")
                row[key], row[key + "_iqr"] = r["median"], [r["q1"], r["q3"]]
                note = f"torch/jax {r['median']:.2f} [{r['q1']:.2f}, {r['q3']:.2f}]"
                name = "torch+R_spec" if ref == "jax_penalty" else "torch"
                print(_row_line(size, name, med[case], note))
            note = f"rel. loss diff {row['parity_rel_loss_diff']:.1e}"
            print(f"{size:6} {'parity':14} {'':10} {note:>34}")
        if "sweep_vmap" in med:
            m = args.members
            per_member = [t / m for t in times["sweep_vmap"]]
            r = ratio_stats(per_member, times["jax_penalty"])
            row["sweep_members"] = m
            row["sweep_vectorised_ms_per_member_step"] = med["sweep_vmap"] / m
            row["sweep_vectorised_over_sequential"] = r["median"]
            row["sweep_vectorised_over_sequential_iqr"] = [r["q1"], r["q3"]]
            note = f"vmap/seq per member {r['median']:.2f}"
            print(_row_line(size, "sweep vmap", med["sweep_vmap"] / m, note))
        report["sizes"][size] = row
    if jax.default_backend() == "gpu":
        report["gpu_vit_base"] = gpu_vit_base(256, args.repeats)
        g = report["gpu_vit_base"]
        print(
            f"ViT-Base MAE on {g['device']}: {g['images_per_s']:.0f} images/s, MFU "
            f"{100 * g['mfu']:.1f}%"
        )
    report["load_avg_after"] = os.getloadavg()
    print(f"load average before {report['load_avg_before']}, after {report['load_avg_after']}")
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
