"""MAE redundancy-balance sweep (Bi, Zhu & Calhoun, 2025, Sec. 4-5, eq. 2, Table 2, Figs. 1-2).

    python -m experiments.mae --config configs/mae.py --workdir runs/mae

Trains a masked autoencoder with L = L_recon + lambda_red R_spec(Z) (eq. 2) for every lambda_red in
``sweep.lambdas`` and every seed in ``sweep.seeds`` (members share the data order; initialisation
and masking noise come from the seed), then refines the lambda grid where neighbouring members'
mean R_spec differ by more than ``sweep.refine.gap``. Members train on the engine
(``redundax.sweep``: the platform's step vmapped over members on a ``(members, data)`` mesh,
``Checkpointer``, metric writers); the MAE pieces live in ``redundax.mae_sweep``. Writes Table 2
(``results.json``, ``results.md``) with two baselines (a linear probe on raw pixels and on the
encoder at its random initialisation), the best member's margin over each, the R* verdict and
three figures (accuracy vs R_spec, training dynamics, accuracy vs lambda).

Outputs in the workdir: ``config.json``; ``members/<tag>.json`` (each finished member);
``sweep/<group>/`` (``metrics.jsonl`` and TensorBoard events of each member group, one record per
member and evaluation, named ``<member tag>/<metric>``); ``checkpoints/<group>/``; results and
figures. Rerunning the same command resumes an interrupted group and skips finished members.
"""

from __future__ import annotations

import logging
import pathlib
import time
from collections.abc import Sequence

import jax
from ml_collections import ConfigDict

from configs import mae as mae_config
from redundax import mae_sweep, sweep
from redundax.plots import mae as plots
from redundax.train import checkpoint, cli, metrics

log = logging.getLogger("experiments.mae")
DEFAULT_CONFIG = str(pathlib.Path(__file__).resolve().parents[1] / "configs" / "mae.py")


def _log_member(config: ConfigDict):
    """A log line per member every ``run.log_every`` epochs."""

    def on_eval(member: sweep.Member, record: dict) -> None:
        if record["step"] and record["epoch"] % config.run.log_every == 0:
            log.info(
                "%s epoch %.1f: train recon %.4f, val recon %.4f, R_spec %.3f, r_eff %.2f",
                member.tag,
                record["epoch"],
                record["train/recon_loss"],
                record["val/recon_loss"],
                record["val/spectral_redundancy"],
                record["val/effective_rank"],
            )

    return on_eval


def write_outputs(work: pathlib.Path, config: ConfigDict, out: dict, results: dict, markdown: str):
    """``results.json``, ``results.md`` and the three figures (process 0)."""
    if jax.process_index() != 0:
        return
    metrics.write_json(work / "results.json", out, indent=1)
    (work / "results.md").write_text(markdown)
    rows, summary, base = out["rows"], out["summary"], out["baselines"]
    histories = {t: (r["value"], r["seed"], r["history"]) for t, r in results.items()}
    plots.figure1(rows, summary, base, out["r_star"], work / "figure1_accuracy_vs_redundancy.png")
    plots.figure2(histories, work / "figure2_rank_and_redundancy.png")
    plots.figure3(rows, summary, base, work / "figure3_accuracy_vs_lambda.png")


def run(config: ConfigDict, workdir: str | pathlib.Path) -> dict:
    """Run the sweep (or its unfinished members) and write every output to ``workdir``."""
    mae_sweep.validate_config(config, mae_config.get_config())
    work = pathlib.Path(workdir)
    checkpoint.check_workdir_config(work, config)  # the run identity (the CLI checks it too)
    if jax.process_index() == 0:
        work.mkdir(parents=True, exist_ok=True)
        metrics.write_json(work / checkpoint.CONFIG_FILE, checkpoint.config_to_dict(config))
    mesh = sweep.sweep_mesh(config.sweep.member_shards)
    data = mae_sweep.load_data(config)
    program = mae_sweep.MAEProgram(config, data)
    store = sweep.ResultStore(work / "members", mae_sweep.config_fingerprint(config))
    steps_per_epoch = data.steps_per_epoch
    schedule = sweep.Schedule(
        num_steps=config.train.epochs * steps_per_epoch,
        steps_per_epoch=steps_per_epoch,
        eval_every=config.eval.every_steps,
        checkpoint_every=config.checkpoint.every_epochs * steps_per_epoch,
    )
    results, rounds = mae_sweep.train_rounds(
        program,
        config,
        store,
        vectorize=config.sweep.vectorize,
        mesh=mesh,
        checkpoint_root=work / "checkpoints",
        log_root=work / "sweep",
        progress=config.run.progress,
        data=data.make_iterator,
        eval_batches=program.heldout_batches(mesh),
        eval_batch_size=program.heldout_batch_size,
        schedule=schedule,
        on_eval=_log_member(config),
    )
    t0 = time.perf_counter()
    base = mae_sweep.baselines(
        program, list(config.sweep.seeds), vectorize=config.sweep.vectorize, mesh=mesh
    )
    rows, res = mae_sweep.table(config, results, base)
    markdown = res.pop("markdown")
    out = {
        "rows": rows,
        "baselines": base,
        **res,
        "refinement": config.sweep.refine.to_dict(),
        "timing": mae_sweep.timing(results, rounds, time.perf_counter() - t0),
        "devices": jax.device_count(),
        "processes": jax.process_count(),
    }
    write_outputs(work, config, out, results, markdown)
    log.info("%s %s", res["warning"] or "", res["headline"])
    log.info("R*: %s", res["r_star"]["statement"])
    log.info(
        "Sweep %.1f s (%s); results in %s",
        out["timing"]["this_run_training_seconds"],
        ", ".join(
            f"round {r['round']}: {r['members']} members {r['seconds']:.0f} s" for r in rounds
        ),
        work,
    )
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m experiments.mae --config configs/mae.py[:preset] --workdir DIR``."""
    logging.getLogger("experiments").setLevel(logging.INFO)
    logging.getLogger("redundax").setLevel(logging.INFO)
    cli.main(run, DEFAULT_CONFIG, argv, keep_host_memory=_vectorised)


def _vectorised(config) -> bool:
    """Whether the sweep trains its members as one vmapped step, whose temporaries (members x
    17 MB for the digits model) are worth keeping mapped (``redundax.train.host_memory``)."""
    sweep_section = config.get("sweep") or {}
    return bool(sweep_section.get("vectorize", False))


if __name__ == "__main__":
    main()
