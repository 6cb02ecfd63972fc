"""MIG (eq. 8, Table I) of a trained main network: its codes of the
protocol's static frames, scored beside the protocol's ceilings (oracle,
swapped, one object) with a 95 % interval over independent frame sets."""

import functools
import operator
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from mipae_jax import autoencoder, input_pipeline, sharding
from mipae_jax.evaluation import (
  disentanglement,
  metrics,
  mig_frames,
  mig_sources,
  progress,
)
from mipae_jax.models.networks import Networks

EncodeFn = Callable[[dict[str, Any], jax.Array], tuple[jax.Array, jax.Array]]


def make_encode_fn(networks: Networks, mesh: jax.sharding.Mesh) -> EncodeFn:
  """(main, batch) -> (z_c, z_p) = (E_c(x), E_p(x)), jitted once on the mesh
  for every frame set and checkpoint it encodes."""

  def encode(main, batch):
    content, _ = autoencoder.encode_content(
      networks, main["params"], main["batch_stats"], batch
    )
    pose = autoencoder.encode_pose(networks, main["params"], main["batch_stats"], batch)
    return content.astype(jnp.float32), pose.astype(jnp.float32)

  batch_sharding = sharding.batch_sharding(mesh)
  return jax.jit(
    encode,
    in_shardings=(sharding.replicated(mesh), batch_sharding),
    out_shardings=batch_sharding,
  )


def encode_frames(
  encode_fn: EncodeFn,
  main: dict[str, Any],
  frames: np.ndarray,
  batch_size: int,
  mesh: jax.sharding.Mesh,
) -> tuple[np.ndarray, np.ndarray]:
  """z_c and z_p (make_encode_fn) of host frames [N, H, W, C], batch by batch."""
  batch_sharding = sharding.batch_sharding(mesh)
  tracker = progress.Progress("MIG encoding", len(frames), "frames")
  content_codes, pose_codes = [], []
  for start in range(0, len(frames), batch_size):
    chunk = frames[start : start + batch_size]
    num_valid = len(chunk)
    chunk = np.concatenate(
      [chunk, np.zeros((batch_size - num_valid, *chunk.shape[1:]), chunk.dtype)]
    )
    # Every process holds all frames: each device takes its rows.
    batch = jax.make_array_from_callback(
      chunk.shape, batch_sharding, functools.partial(operator.getitem, chunk)
    )
    content, pose = progress.gather(encode_fn(main, batch))
    content_codes.append(content[:num_valid])
    pose_codes.append(pose[:num_valid])
    tracker.update(start + num_valid)
  return np.concatenate(content_codes), np.concatenate(pose_codes)


def _mig_frame_sets(
  config: ml_collections.ConfigDict, info: Any
) -> mig_frames.FrameSets:
  """config.eval.mig_folds independent sets of (frames, content, pose),
  together num_mig_frames: seeds of the protocol, for the interval."""
  folds = config.eval.mig_folds
  per_fold = config.eval.num_mig_frames // folds
  if config.eval.mig_protocol == "video_frames":
    data = input_pipeline.load_frames(
      config.dataset, split="test", num_frames=per_fold * folds, seed=config.seed
    )
    columns = (data["frames"], data["content_factors"], data["pose_factors"])
    return mig_frames.FrameSets(
      [
        tuple(c[f * per_fold : (f + 1) * per_fold] for c in columns)
        for f in range(folds)
      ],
      tuple(info.content_factor_names),
      info.content_is_partial,
    )
  return mig_frames.mig_frame_sets(
    config.dataset,
    per_fold,
    seeds=[config.seed * folds + fold for fold in range(folds)],
    protocol=config.eval.mig_protocol,
  )


def mig_with_ceiling(
  content: np.ndarray,
  pose: np.ndarray,
  z_c: np.ndarray,
  z_p: np.ndarray,
  objects: mig_sources.Objects | None = None,
) -> dict[str, float]:
  """eq. 8 and its Table I terms for (z_c, z_p), beside the protocol's
  ceiling and floor on the same frames: oracle codes (a perfect encoder),
  the same codes swapped, and with several objects an oracle of the first
  object only (its content in z_c, its pose in z_p: what a model that draws
  one object of the scene can reach), and each object's captured shares."""
  blocks = (
    None
    if objects is None
    else dict(
      zip(
        objects.names,
        zip(objects.content_columns, objects.pose_columns, strict=True),
        strict=True,
      )
    )
  )
  terms = disentanglement.mig(content, pose, z_c, z_p, objects=blocks)
  dims = (z_c.shape[1], z_p.shape[1])
  oracle_c, oracle_p = mig_frames.oracle_codes(content, pose, *dims)
  terms["oracle_MIG"] = disentanglement.mig(content, pose, oracle_c, oracle_p)["MIG"]
  terms["swapped_MIG"] = disentanglement.mig(content, pose, oracle_p, oracle_c)["MIG"]
  if objects is not None:
    one_c, one_p = mig_frames.oracle_codes(
      content[:, list(objects.content_columns[0])],
      pose[:, list(objects.pose_columns[0])],
      *dims,
    )
    terms["one_object_MIG"] = disentanglement.mig(content, pose, one_c, one_p)["MIG"]
  return terms


def evaluate_mig(
  config: ml_collections.ConfigDict,
  info: Any,
  encode_fn: EncodeFn,
  main: dict[str, Any],
  mesh: jax.sharding.Mesh,
) -> tuple[dict[str, Any], dict[str, float]]:
  """Table I terms of eq. 8 with their ceiling, as the mean over
  config.eval.mig_folds independent frame sets with a 95 % interval
  ("<term>_ci95", Student's t over the sets), and timings. encode_fn:
  make_encode_fn's."""
  start = time.monotonic()
  encode_s, per_fold, labels = 0.0, [], []
  frame_sets = _mig_frame_sets(config, info)
  for frames, content, pose in frame_sets.sets:
    encode_start = time.monotonic()
    z_c, z_p = encode_frames(encode_fn, main, frames, config.eval.batch_size, mesh)
    encode_s += time.monotonic() - encode_start
    logging.info("MIG: estimating mutual informations on %d frames.", len(z_c))
    per_fold.append(mig_with_ceiling(content, pose, z_c, z_p, frame_sets.objects))
    labels.append((len(np.unique(content, axis=0)), len(np.unique(pose, axis=0))))
  result: dict[str, Any] = {}
  for term in per_fold[0]:
    mean, half_width = metrics.mean_and_ci95([fold[term] for fold in per_fold])
    result[term], result[f"{term}_ci95"] = mean, half_width
  result.update(
    protocol=config.eval.mig_protocol,
    partial=frame_sets.content_is_partial,
    num_frames=config.eval.num_mig_frames // config.eval.mig_folds * len(per_fold),
    num_frame_sets=len(per_fold),
    content_factor_names=list(frame_sets.content_factor_names),
    pose_factor_names=list(info.pose_factor_names),
    num_content_labels=labels[0][0],
    num_pose_labels=labels[0][1],
    objects=list(frame_sets.objects.names) if frame_sets.objects else [],
  )
  timing = {
    "mig_load_and_encode_s": encode_s,
    "mig_estimate_s": time.monotonic() - start - encode_s,
  }
  return result, timing
