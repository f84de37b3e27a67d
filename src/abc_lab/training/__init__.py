"""Training: Lightning module, schedules, run records and the `abc-lab train` job."""
