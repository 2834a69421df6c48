"""raw2logit's single entry point: ``python run.py [Hydra overrides]`` (see README)."""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig):
    from raw2logit.cli import main as run

    return run(cfg)


if __name__ == "__main__":
    import sys
    from pathlib import Path

    from raw2logit.cli import check_group_choices, check_output_folders

    check_group_choices(sys.argv[1:], Path(__file__).resolve().parent / "conf")
    check_output_folders(sys.argv[1:])
    main()
