"""Script form of `abc-lab train`: Lightning's DDP launcher re-runs this file for other ranks."""

import sys

from abc_lab.training.entry import run_hydra

if __name__ == "__main__":
    sys.exit(run_hydra(sys.argv[1:]))
