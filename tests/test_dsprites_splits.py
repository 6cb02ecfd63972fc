"""Tests for mipae_jax.datasets.dsprites_splits: the authors' content split."""

import pathlib

import numpy as np
import pytest

from mipae_jax.datasets import dsprites_splits

SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.parametrize("rotating", [False, True])
def test_train_and_test_contents_are_disjoint_and_cover_every_value(rotating):
  contents = dsprites_splits.split_contents(rotating)
  train = {tuple(c) for c in contents["train"].tolist()}
  test = {tuple(c) for c in contents["test"].tolist()}
  assert not train & test
  assert (len(train), len(test)) == ((12, 6) if rotating else (500, 220))
  # Every value of every content factor is still seen in training.
  for axis, size in enumerate((3, 6) if rotating else (3, 6, 40)):
    assert set(contents["train"][:, axis]) == set(range(size))


@pytest.mark.skipif(
  not (SHARED / "authors_splits").exists(), reason="no shared authors' split files"
)
@pytest.mark.parametrize("rotating", [False, True])
def test_split_equals_the_authors_split_files(rotating):
  contents = dsprites_splits.split_contents(rotating)
  prefix = "dsprites_no_rot" if rotating else "dsprites"
  for split in ("train", "test"):
    authors = np.load(SHARED / "authors_splits" / f"{prefix}_{split}_split.npy")
    # Their files list the rows in their own order; ours are sorted.
    np.testing.assert_array_equal(contents[split], authors[np.lexsort(authors.T[::-1])])
