"""Experiment configs, one file per method and dataset (`from mipae_jax.configs import
base`); the repository root's `configs` links here, so that
`--config=configs/<file>.py[:variant]` works from the root."""
