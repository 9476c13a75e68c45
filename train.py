"""Train LGFN: `python train.py experiment=quickstart` (fit, then test with the best checkpoint)."""

# isort: off
import lgfn  # noqa: F401  (first: sets the OpenMP wait policy before torch loads)
# isort: on

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig

from lgfn import jobs, runner


def train(cfg: DictConfig) -> float | None:
    runner.validate_config(cfg)
    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model)
    trainer = instantiate(
        cfg.trainer,
        callbacks=runner.instantiate_list(cfg.get("callbacks")),
        logger=runner.instantiate_list(cfg.get("logger")) or False,
    )
    out = runner.output_dir()
    ckpt_path = jobs.resume_path(cfg, out)  # ckpt_path=, else this directory's own last.ckpt (requeue, re-run)
    if trainer.is_global_zero:
        runner.save_resolved_config(cfg, out)
    for logger in trainer.loggers:
        logger.log_hyperparams(runner.OmegaConf.to_container(cfg, resolve=True))

    if cfg.train:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    metric = trainer.callback_metrics.get(cfg.optimized_metric)
    if cfg.test:
        best = getattr(trainer.checkpoint_callback, "best_model_path", "") if cfg.test_ckpt == "best" else ""
        trainer.test(model, datamodule=datamodule, ckpt_path=best or None)
        runner.report_results(model.test_results, trainer, out, runner.model_label(model, cfg),
                              show=cfg.print_table, samples=model.test_samples)
    if cfg.export_weights and trainer.is_global_zero:
        runner.export_weights(trainer, cfg.export_weights, cfg.test_ckpt)
    return None if metric is None else float(metric)


@runner.hydra_main(config_name="train")
def main(cfg: DictConfig) -> float | None:
    return runner.run_task(train, cfg)


if __name__ == "__main__":
    main()
