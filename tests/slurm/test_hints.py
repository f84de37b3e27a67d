"""The SLURM launcher's pieces that need no cluster: GPUs from the trainer, refusal lines."""

import pytest

from abc_lab.training.resolvers import slurm_gpus
from hydra_plugins.abc_lab_slurm.launcher import refusal_hint


@pytest.mark.parametrize(
    "accelerator, devices, gpus",
    [("cpu", 1, 0), ("cpu", 2, 0), ("gpu", 1, 1), ("gpu", 4, 4), ("gpu", -1, 1), ("auto", 1, 0)],
)
def test_slurm_gpus_follow_the_trainer(accelerator, devices, gpus):
    assert slurm_gpus(accelerator, devices) == gpus


@pytest.mark.parametrize(
    "message, setting",
    [
        ("sbatch: error: Batch job submission failed: Invalid generic resource (gres) "
         "specification", "hydra.launcher.gpus_per_node=0"),
        ("sbatch: error: invalid partition specified: gpu\nsbatch: error: Batch job "
         "submission failed: Invalid partition name specified", "hydra.launcher.partition="),
        ("sbatch: error: Memory specification can not be satisfied\nsbatch: error: Batch job "
         "submission failed: Requested node configuration is not available",
         "hydra.launcher.mem_gb="),
        ("sbatch: error: Batch job submission failed: Requested time limit is invalid "
         "(missing or exceeds some limit)", "hydra.launcher.timeout_min="),
        ("sbatch: error: something new", "hydra.launcher.* settings"),
    ],
)  # fmt: skip
def test_refusal_hint_is_one_line_naming_the_setting(message, setting):
    hint = refusal_hint(message)
    assert "\n" not in hint and hint.startswith("sbatch refused the job (")
    assert setting in hint
