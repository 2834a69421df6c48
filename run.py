"""raw2logit's single entry point: ``python run.py [Hydra overrides]`` (see README)."""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig):
    from raw2logit.cli import main as run

    return run(cfg)


if __name__ == "__main__":
    import sys

    from raw2logit.command_line import check

    check(sys.argv[1:])  # one sentence and exit status 2 for a command line that cannot run
    main()
