"""The authors' Moving dSprites content split (their data/dsprites_test_split.npy
and dsprites_no_rot_test_split.npy): which shape, scale[, orientation]
combinations are test contents; every other one is a train content."""

import numpy as np

from mipae_jax.datasets import dsprites_shapes as shapes

# Fixed orientation: the test combinations as a bit mask over
# all_contents(rotating=False) (720 (shape, scale, orientation) rows), in hex.
FIXED_TEST_MASK = (
  "09c00904076b80801a138a46061d8a100068141303660400a240c310005485d221e0742068d9"
  "2e2470a0084804140814a834510f0340aac2661851a0e2a80088c9052108199d10825508822256"
  "311907170272066021b10aa040"
)
# Rotating: the test (shape, scale) pairs.
ROTATING_TEST_CONTENTS = ((0, 1), (0, 3), (0, 5), (1, 0), (1, 1), (1, 5))


def all_contents(rotating: bool) -> np.ndarray:
  """Returns every content combination, int [N, 2 or 3], in lexicographic order."""
  sizes = [shapes.NUM_SHAPES, shapes.NUM_SCALES]
  if not rotating:
    sizes.append(shapes.NUM_ORIENTATIONS)
  return np.stack(np.unravel_index(np.arange(np.prod(sizes)), sizes), -1)


def split_contents(rotating: bool) -> dict[str, np.ndarray]:
  """Returns the authors' disjoint content combinations of each split.

  Rows are in lexicographic order: (shape, scale, orientation) when fixed
  (500 train / 220 test), (shape, scale) when rotating (12 / 6).
  """
  contents = all_contents(rotating)
  if rotating:
    held_out = set(ROTATING_TEST_CONTENTS)
    is_test = np.array([tuple(c) in held_out for c in contents.tolist()])
  else:
    bits = np.frombuffer(bytes.fromhex(FIXED_TEST_MASK), np.uint8)
    is_test = np.unpackbits(bits)[: len(contents)].astype(bool)
  return {"train": contents[~is_test], "test": contents[is_test]}
