"""abc-lab: train, sweep and compare ABC-Net binary CNNs against full-precision baselines."""

__version__ = "0.1.0"
