"""Evaluation of a trained workdir: frame metrics (Fig. 5), MIG (eq. 8,
Table I), swap grids (Figs. 3, 4, 6) and prediction strips.

  python -m mipae_jax.main --config=configs/mipae_dsprites.py --workdir=DIR --mode=eval
  python -m mipae_jax.main --mode=compare --workdirs=DIR1,DIR2,... [--workdir=OUT]

`evaluate` restores the main network (config.eval.step, -1 latest) and the
latest pose LSTM of a workdir, predicts num_future frames from num_context
test frames (content never seen in training) and scores every predicted
frame; it encodes num_mig_frames single test frames for MIG. Everything goes
to DIR/eval: metrics.json, frame_metrics.csv, PNGs, and TensorBoard events
(`eval_` tags). `--mode=compare` tabulates several such workdirs (compare.py).
"""

import dataclasses
import functools
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from mipae_jax import (
  autoencoder,
  config_validation,
  input_pipeline,
  predict,
  restore,
  sharding,
)
from mipae_jax.datasets import prepared
from mipae_jax.evaluation import eval_outputs, metrics, mig_scores, progress
from mipae_jax.evaluation.eval_outputs import (
  MIG_TAGS,
  STRIP_SEQUENCES,
  SWAP_CONTENT_ROWS,
  json_ready,
)


def _builder_config_name(config: ml_collections.ConfigDict) -> str:
  builder_config = config.dataset.builder_config
  return builder_config if isinstance(builder_config, str) else builder_config.name


def _as_rgb(frames: jax.Array) -> jax.Array:
  """Grey (1) or 2-channel frames as RGB for LPIPS, as visualize.as_rgb does."""
  channels = frames.shape[-1]
  if channels == 1:
    return jnp.repeat(frames, 3, axis=-1)
  if channels == 2:
    return jnp.concatenate([frames, jnp.zeros_like(frames[..., :1])], axis=-1)
  return frames


def frame_scores(
  predicted: jax.Array, truth: jax.Array, lpips_nets: Sequence[str]
) -> dict[str, jax.Array]:
  """PSNR, SSIM and LPIPS of each predicted frame: name -> [B, T] (Fig. 5)."""
  predicted = predicted.astype(jnp.float32)
  scores = {
    "psnr": metrics.psnr(predicted, truth),
    "ssim": metrics.ssim(predicted, truth),
  }
  for net in lpips_nets:
    scores[f"lpips_{net}"] = metrics.lpips(_as_rgb(predicted), _as_rgb(truth), net=net)
  return scores


def object_channels(config: ml_collections.ConfigDict) -> tuple[tuple[str, ...], str]:
  """The objects drawn one per colour channel (object i in channel i), and
  why there are none: Moving dSprites' sprites, colour Moving MNIST's
  digits; grey Moving MNIST and MPI3D have no channel per object."""
  builder_config = prepared.get_builder(config.dataset).builder_config
  if config.dataset.name == "moving_dsprites":
    return tuple(f"sprite{s}" for s in range(builder_config.num_sprites)), ""
  if config.dataset.name == "moving_mnist":
    if builder_config.colour:
      return tuple(f"digit{d}" for d in range(builder_config.num_digits)), ""
    return (), "grey Moving MNIST draws every digit in one channel"
  return (), f"{config.dataset.name} has no channel per object"


def channel_errors(
  frames: jax.Array, truth: jax.Array, objects: Sequence[str]
) -> dict[str, jax.Array]:
  """Per object (channel i = objects[i]): the MSE of frames [B, T, H, W, C]
  against truth in that channel, and of an all-black frame: name -> [B, T]."""
  errors = {}
  for channel, name in enumerate(objects):
    target = truth[..., channel]
    errors[f"mse_{name}"] = jnp.mean((frames[..., channel] - target) ** 2, axis=(2, 3))
    errors[f"black_{name}"] = jnp.mean(target**2, axis=(2, 3))
  return errors


def object_error_curves(
  errors: dict[str, np.ndarray], objects: Sequence[str]
) -> dict[str, Any]:
  """Per object and predicted frame, the channel's MSE over the all-black
  MSE on the same frames (0: exact, 1: not drawn) with a 95 % interval, for
  the LSTM's predictions ("object_error_<name>") and for the decoder given
  the true poses ("recon_object_error_<name>"); same layout as
  summarize_scores."""
  curves = {}
  for name in objects:
    black = errors[f"black_{name}"]
    for prefix in ("", "recon_"):
      mse = errors[f"{prefix}mse_{name}"]
      ratio, half_width = metrics.ratio_and_ci95(mse, black, axis=0)
      horizon, horizon_half = metrics.ratio_and_ci95(mse.sum(1), black.sum(1))
      curves[f"{prefix}object_error_{name}"] = {
        "mean": np.asarray(ratio).tolist(),
        "ci95": np.asarray(half_width).tolist(),
        "horizon_mean": horizon,
        "horizon_ci95": horizon_half,
      }
  return curves


@dataclasses.dataclass
class FrameEvaluation:
  """Per-sequence scores of the test sequences and a few videos to show."""

  scores: dict[str, np.ndarray]  # name -> [N, T]
  videos: np.ndarray  # uint8 [n, C + T, H, W, ch], the first test videos
  predicted: np.ndarray  # [min(n, STRIP_SEQUENCES), T, H, W, ch] in [0, 1]
  # channel_errors of the predictions and ("recon_" keys) of the
  # reconstructions with true poses, per object: name -> [N, T].
  object_errors: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)


def evaluate_frames(
  predict_fn: Callable[[dict[str, Any], jax.Array], jax.Array],
  params: dict[str, Any],
  batches: Iterator[dict[str, jax.Array]],
  num_sequences: int,
  num_context: int,
  lpips_nets: Sequence[str],
  reconstruct_fn: Callable[[Any, jax.Array, jax.Array], jax.Array] | None = None,
  objects: Sequence[str] = (),
) -> FrameEvaluation:
  """Predicts the future of every test sequence and scores each frame; with
  `objects` (one per colour channel) also each object's channel error of the
  predictions and of reconstruct_fn's (main, context, future) frames."""
  tracker = progress.Progress("Frame metrics", num_sequences, "sequences")
  scores: dict[str, list[np.ndarray]] = {}
  object_errors: dict[str, list[np.ndarray]] = {}
  videos = predicted_shown = None
  done = 0
  for batch in batches:
    video = batch["video"]
    predicted = predict_fn(params, video[:, :num_context])
    truth = autoencoder.to_float_frames(video[:, num_context:])
    batch_scores = frame_scores(predicted, truth, lpips_nets)
    batch_errors = {}
    if objects:
      batch_errors = channel_errors(predicted, truth, objects)
      recon = reconstruct_fn(
        params["main"], video[:, :num_context], video[:, num_context:]
      )
      for name, value in channel_errors(recon, truth, objects).items():
        if name.startswith("mse_"):
          batch_errors[f"recon_{name}"] = value
    gathered = progress.gather({"mask": batch["mask"], **batch_scores, **batch_errors})
    mask = gathered["mask"]
    for name in batch_scores:
      scores.setdefault(name, []).append(gathered[name][mask])
    for name in batch_errors:
      object_errors.setdefault(name, []).append(gathered[name][mask])
    if videos is None:
      num_shown = min(SWAP_CONTENT_ROWS + 1, int(mask.sum()))
      videos = progress.gather(video[:num_shown])
      predicted_shown = progress.gather(predicted[: min(STRIP_SEQUENCES, num_shown)])
    done += int(mask.sum())
    num_future = truth.shape[1]
    tracker.update(done, f" ({done * num_future} frames)")
  if done == 0:
    raise ValueError("The test split yielded no sequence: nothing to evaluate.")
  return FrameEvaluation(
    {name: np.concatenate(values) for name, values in scores.items()},
    videos,
    predicted_shown,
    {name: np.concatenate(values) for name, values in object_errors.items()},
  )


def summarize_scores(scores: dict[str, np.ndarray]) -> dict[str, Any]:
  """Mean and 95 % CI over sequences of each frame and of the horizon average."""
  summary = {}
  for name, values in scores.items():
    mean, half_width = metrics.mean_and_ci95(values, axis=0)
    horizon_mean, horizon_half_width = metrics.mean_and_ci95(values.mean(axis=1))
    summary[name] = {
      "mean": np.asarray(mean).tolist(),
      "ci95": np.asarray(half_width).tolist(),
      "horizon_mean": horizon_mean,
      "horizon_ci95": horizon_half_width,
    }
  return summary


def table_row(result: dict[str, Any]) -> dict[str, Any]:
  """The Table I row of an evaluated run (None terms when MIG was skipped)."""
  mig = result["mig"] or {}
  return {
    "dataset": result["dataset"],
    "experiment": result["method"],
    **{term: mig.get(term) for term in MIG_TAGS},
    "partial": mig.get("partial"),
  }


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Evaluates the trained workdir on the test split; returns metrics.json's content.

  Raises:
    ValueError: a bad config.eval, a test split that is empty or whose videos
      are shorter than num_context + num_future, or MIG asked of a dataset
      without known factors.
    checkpointing.CheckpointError: a missing or incompatible main-network or
      pose-LSTM checkpoint.
  """
  started = time.monotonic()
  config_validation.validate(config)
  config_validation.validate_eval(config)
  mesh = sharding.create_mesh()
  config_validation.check_batch_size(config.eval.batch_size, mesh, "eval.batch_size")
  info = prepared.dataset_info(config.dataset)
  config_validation.check_dataset(config, info)
  num_sequences = config_validation.check_eval_data(config, info)
  num_context, num_future = config.eval.num_context, config.eval.num_future

  networks, main, main_step = restore.load_main_network(
    config, workdir, info, step=config.eval.step
  )
  pose_lstm, lstm_params, lstm_step = restore.load_pose_lstm(
    config, workdir, info, main_step=main_step
  )
  restored = time.monotonic()
  logging.info(
    "Evaluating %s: main network step %d, pose LSTM step %d, %d test sequences, "
    "%d + %d frames.",
    workdir,
    main_step,
    lstm_step,
    num_sequences,
    num_context,
    num_future,
  )

  predict_fn = predict.make_predict_fn(
    predict.Predictor(networks, pose_lstm), mesh, num_future
  )
  batches = input_pipeline.create_eval_iterator(
    config.dataset,
    split="test",
    global_batch_size=config.eval.batch_size,
    sharding=sharding.batch_sharding(mesh),
    num_frames=num_context + num_future,
    num_sequences=num_sequences,
  )
  objects, no_objects = object_channels(config)
  if not objects:
    logging.info("No per-object channel errors: %s.", no_objects)
  frames = evaluate_frames(
    predict_fn,
    {"main": main, "lstm": lstm_params},
    batches,
    num_sequences,
    num_context,
    tuple(config.eval.lpips_nets),
    predict.make_reconstruct_fn(networks, mesh),
    objects,
  )
  curves = summarize_scores(frames.scores)
  curves.update(object_error_curves(frames.object_errors, objects))
  scored = time.monotonic()
  timing = {
    "restore_s": restored - started,
    "frame_metrics_s": scored - restored,
    "frames_per_s": num_sequences * num_future / (scored - restored),
  }
  mig = None
  if config.eval.num_mig_frames:
    encode_fn = mig_scores.make_encode_fn(networks, mesh)
    mig, mig_timing = mig_scores.evaluate_mig(config, info, encode_fn, main, mesh)
    timing.update(mig_timing)

  result = {
    "method": config.method,
    "run": os.path.basename(os.path.normpath(workdir)),
    "workdir": os.path.abspath(workdir),
    "dataset": config.dataset.name,
    "builder_config": _builder_config_name(config),
    "main_step": main_step,
    "lstm_step": lstm_step,
    "num_context": num_context,
    "num_future": num_future,
    "frame_metrics": {
      "num_sequences": num_sequences,
      "frames": list(range(1, num_future + 1)),
      "curves": curves,
      "objects": list(objects),
      "no_objects": no_objects,
    },
    "mig": mig,
    "timing": timing,
  }
  result["table_i"] = table_row(result)
  if jax.process_index() == 0:
    pictures_start = time.monotonic()
    # Jitted once for this evaluation's networks.
    swap_decode = jax.jit(functools.partial(autoencoder.swap_decode, networks))
    pictures = eval_outputs.pictures(
      swap_decode,
      main,
      frames.videos,
      frames.predicted,
      num_context,
      f"{config.method.upper()} {result['run']}, step {main_step}",
    )
    result["files"] = eval_outputs.write_outputs(result, pictures, workdir)
    timing["pictures_s"] = time.monotonic() - pictures_start
  timing["total_s"] = time.monotonic() - started
  result = json_ready(result)
  if jax.process_index() == 0:
    eval_outputs.write_metrics(result, workdir)
  logging.info("Evaluation of %s done in %.1f s.", workdir, timing["total_s"])
  return result
