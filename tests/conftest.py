"""Suite-wide settings: eager activation kernels (no compile delay) unless a test asks."""

import os

os.environ.setdefault("ABC_LAB_KERNEL", "eager")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
