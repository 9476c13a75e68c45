"""Evaluate: `python eval.py ckpt_path=PATH data=vid4 data.root=DIR` or `model=bicubic`; writes metrics.json."""

# isort: off
import lgfn  # noqa: F401  (first: sets the OpenMP wait policy before torch loads)
# isort: on

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig

from lgfn.app import baselines, checkpoint_args, config, task
from lgfn.common.errors import ConfigError
from lgfn.results import publish, table


def evaluate(cfg: DictConfig) -> dict:
    config.validate_config(cfg)
    ckpt = checkpoint_args.adopt_checkpoint_sizes(cfg)  # model.net takes the sizes the file was saved with
    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model)
    if ckpt is not None:
        checkpoint_args.load_net_weights(model, ckpt)
    elif any(True for _ in model.net.parameters()) and not cfg.model.get("weights"):
        raise ConfigError("eval.py needs ckpt_path=PATH for a trained model (or model=bicubic for the baseline, "
                          "model=basicvsr for BasicVSR's released weights)")
    trainer = instantiate(cfg.trainer, logger=task.instantiate_list(cfg.get("logger")) or False)
    out = task.output_dir()
    if trainer.is_global_zero:
        task.save_resolved_config(cfg, out)
    trainer.test(model, datamodule=datamodule)
    baselines.add_baselines(cfg, model.test_results, model.test_samples)  # baselines=[bicubic,basicvsr]
    publish.report_results(model.test_results, trainer, out, table.model_label(model, cfg), show=cfg.print_table,
                           samples=model.test_samples)
    return model.test_results


@task.hydra_main(config_name="eval")
def main(cfg: DictConfig) -> None:
    task.run_task(evaluate, cfg)


if __name__ == "__main__":
    main()
