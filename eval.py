"""Evaluate: `python eval.py ckpt_path=PATH data=vid4 data.root=DIR` or `model=bicubic`; writes metrics.json."""

# isort: off
import lgfn  # noqa: F401  (first: sets the OpenMP wait policy before torch loads)
# isort: on

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig

from lgfn import runner


def evaluate(cfg: DictConfig) -> dict:
    runner.validate_config(cfg)
    runner.adopt_release_sizes(cfg)  # the authors' release as ckpt_path: the paper-size LGFN
    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model)
    if cfg.ckpt_path:
        runner.load_net_weights(model, cfg.ckpt_path)
    elif any(True for _ in model.net.parameters()):
        raise runner.ConfigError("eval.py needs ckpt_path=PATH for a trained model (or model=bicubic for the baseline)")
    trainer = instantiate(cfg.trainer, logger=runner.instantiate_list(cfg.get("logger")) or False)
    out = runner.output_dir()
    if trainer.is_global_zero:
        runner.save_resolved_config(cfg, out)
    trainer.test(model, datamodule=datamodule)
    runner.report_results(model.test_results, trainer, out, runner.model_label(model, cfg), show=cfg.print_table,
                          samples=model.test_samples)
    return model.test_results


@runner.hydra_main(config_name="eval")
def main(cfg: DictConfig) -> None:
    runner.run_task(evaluate, cfg)


if __name__ == "__main__":
    main()
