"""The paper's numbers and names that the evaluation, the comparison table and
the reproduction's report share: the terms of MIG (eq. 8), Table I, which way
each metric is better, and why the reduced scale is what it is."""

from mipae_jax.evaluation import disentanglement
from mipae_jax.registry import METHODS  # noqa: F401  (the tables' row order)

# Every term of eq. 8 that disentanglement.mig returns -> its TensorBoard tag.
MIG_TERMS = disentanglement.MIG_TERMS
# The columns of Table I: the four mutual informations, then MIG.
TABLE_I_TERMS = tuple(term for term in MIG_TERMS if not term.startswith("H("))


def _table_i_row(values: tuple[float, ...]) -> dict[str, float]:
  return dict(zip(TABLE_I_TERMS, values, strict=True))


# Table I of the paper, as printed (MIPAE's I(f_p,z_c) on dSprites reads
# 0.725, likely 0.0725: it is copied unchanged).
PAPER_TABLE_I = {
  "moving_dsprites": {
    "drnet": _table_i_row((5.6476, 0.7483, 0.0748, 6.3434, 0.8574)),
    "mipae": _table_i_row((5.6992, 0.4660, 0.725, 6.4977, 0.8975)),
  },
  "moving_mpi3d": {
    "drnet": _table_i_row((8.1353, 0.0376, 0.0448, 6.2029, 0.5658)),
    "mipae": _table_i_row((8.3866, 0.0461, 0.0080, 7.1034, 0.6126)),
  },
}
# Which way is better for each Table I term and frame metric.
HIGHER_IS_BETTER = {
  "I(f_c,z_c)": True,
  "I(f_c,z_p)": False,
  "I(f_p,z_c)": False,
  "I(f_p,z_p)": True,
  "MIG": True,
  "psnr": True,
  "ssim": True,
  "lpips_alex": False,
  "lpips_vgg": False,
}

# Why the `reduced` variant (configs/base.py, apply_reduced) has its settings.
REDUCED_RATIONALE = (
  "Step times were measured on this 2-core CPU (AMD EPYC, AVX-512), idle, "
  "with GLIBC_TUNABLES=glibc.malloc.hugetlb=1 and "
  "benchmarks/train_throughput.py (median of 5 steps after 2 warm-up steps): a "
  "MIPAE main step took 0.19 s at batch 16 and 1.02 s at batch 100 (DRNET 0.16 "
  "s and 1.04 s), a pose-LSTM step (5 context + 10 future frames) 0.24 s at "
  "batch 16, and predicting 30 frames ran at 38 sequences/s. Batches 16 and "
  "100 see about the same number of videos per second (83 vs 98); batch 16 "
  "gives 6x more updates for the same videos, which matters far from "
  "convergence. 6,000 main steps x 16 videos (96,000 videos: about 5 epochs of "
  "the 20,000 training videos, 0.4 % of the paper's 24M) take about 20-30 "
  "minutes per method with logging and checkpoints, 1,200 LSTM steps about 5 "
  "minutes, the evaluation 2-8 minutes: about 1.5 hours for both methods. The "
  "evaluation keeps the paper's protocol (5 context, 30 predicted frames) on "
  "500 of the 2,000 test sequences, and estimates MIG on 20,000 frames instead "
  "of 100,000 (the k-NN estimator grows faster than linearly). LPIPS uses "
  "AlexNet only: LPIPS-vgg scored 12 frames/s against AlexNet's 355 (loaded "
  "machine), 21 minutes per method for the 15,000 predicted frames."
)
