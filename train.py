"""Train LGFN: `python train.py experiment=quickstart` (fit, then test with the best checkpoint)."""

# isort: off
import lgfn  # noqa: F401  (first: sets the OpenMP wait policy before torch loads)
# isort: on

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig

from lgfn.app import baselines, checkpoint_args, config, task
from lgfn.cluster import job_dir
from lgfn.results import publish, table


def train(cfg: DictConfig) -> float | None:
    config.validate_config(cfg)
    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model)
    trainer = instantiate(
        cfg.trainer,
        callbacks=task.instantiate_list(cfg.get("callbacks")),
        logger=task.instantiate_list(cfg.get("logger")) or False,
    )
    out = task.output_dir()
    ckpt_path = job_dir.resume_path(cfg, out)  # ckpt_path=, else this directory's own last.ckpt (requeue, re-run)
    if ckpt_path and cfg.train:
        checkpoint_args.check_resumable(ckpt_path, model)
    if trainer.is_global_zero:
        task.save_resolved_config(cfg, out)
    task.log_config_after_setup(trainer, cfg)  # after the data module's setup: a bad data.root starts no W&B run

    if cfg.train:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    metric = trainer.callback_metrics.get(cfg.optimized_metric)
    if cfg.test:
        best = getattr(trainer.checkpoint_callback, "best_model_path", "") if cfg.test_ckpt == "best" else ""
        trainer.test(model, datamodule=datamodule, ckpt_path=best or None)
        baselines.add_baselines(cfg, model.test_results, model.test_samples)  # baselines=[bicubic,basicvsr]
        publish.report_results(model.test_results, trainer, out, table.model_label(model, cfg),
                               show=cfg.print_table, samples=model.test_samples)
    if cfg.export_weights and trainer.is_global_zero:
        checkpoint_args.export_weights(trainer, cfg.export_weights, cfg.test_ckpt)
    if cfg.train:
        publish.print_checkpoints(trainer)
    return None if metric is None else float(metric)


@task.hydra_main(config_name="train")
def main(cfg: DictConfig) -> float | None:
    return task.run_task(train, cfg)


if __name__ == "__main__":
    main()
