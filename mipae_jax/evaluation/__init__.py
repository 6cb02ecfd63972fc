"""Evaluation of trained runs: frame metrics and MIG (eq. 8) with their
calibration, the static frames MIG is measured on, learning curves, and the
pictures and files an evaluation writes."""
