"""Train one configuration (or a sweep with -m): python train.py loss=focal optimizer=sgd."""

import hydra
from omegaconf import DictConfig

from medsweep.config import register_resolvers

register_resolvers()


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    from medsweep.config_check import check_fields

    check_fields(cfg)  # plain values, before the pipeline's imports (torch, Lightning: seconds)
    from medsweep.config import quiet_library_noise, route_library_logs
    from medsweep.pipeline import train
    from medsweep.results import print_summary

    route_library_logs()
    quiet_library_noise()
    record = train(cfg)
    print_summary(record)
    return record.get("val", {}).get(cfg.monitor.split("/", 1)[-1])


if __name__ == "__main__":
    main()
