"""Learning curves of a main-network run: every kept checkpoint scored on the
test split, beside the run's own training scalars, and one plot over runs.

Each checkpoint gets:
- MIG (eq. 8) under the config's protocol, mean and 95 % interval over
  `eval.mig_folds` frame sets, with the oracle ceiling on the same frames;
- the reconstruction error D(E_c(x^0), E_p(x^t)) vs x^t on test videos, per
  colour channel, beside the error of an all-black frame on the same videos
  (a decoder that draws nothing in a channel scores that floor there: on
  Moving dSprites, whose sprites are red and green, the channel still at
  the floor tells which sprite is not drawn yet);
- its swap grid (content rows x pose columns) as a PNG.

  python -m mipae_jax.main --mode=curves --config=configs/mipae_dsprites.py:long_cpu \
    --workdir=workdir_long/mipae --workdirs=workdir_long/drnet

Scores go to WORKDIR/curves/scores.jsonl, one line per step; steps already
scored are skipped, so the command can be rerun as training goes on.
"""

import functools
import glob
import json
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import matplotlib.figure
import ml_collections
import numpy as np
from absl import logging
from etils import epath
from matplotlib.backends import backend_agg
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tensor_util

from mipae_jax import autoencoder, checkpointing, input_pipeline, restore, sharding
from mipae_jax.datasets import prepared
from mipae_jax.evaluation import eval_outputs, mig_scores, visualize

CURVES_DIR = "curves"
SCORES_FILE = "scores.jsonl"
PLOT_FILE = "learning_curves.png"


def _reconstruct(networks, params, batch_stats, video: jax.Array) -> jax.Array:
  """D(E_c(x^0), E_p(x^t)) for every frame t of videos [V, T, H, W, C]."""
  num_videos, num_frames = video.shape[:2]
  content, skips = autoencoder.encode_content(
    networks, params, batch_stats, video[:, 0]
  )
  pose = autoencoder.encode_pose(
    networks, params, batch_stats, video.reshape(-1, *video.shape[2:])
  )
  repeat = functools.partial(jnp.repeat, repeats=num_frames, axis=0)
  decoded = autoencoder.decode(
    networks, params, batch_stats, repeat(content), pose, jax.tree.map(repeat, skips)
  )
  return decoded.reshape(num_videos, num_frames, *decoded.shape[1:])


def reconstruction_errors(reconstructed: np.ndarray, video: np.ndarray) -> dict:
  """Per-channel MSE of reconstructions in [0, 1] against uint8 `video`, and
  of an all-black frame (the floor of a decoder that draws nothing)."""
  target = video.astype(np.float32) / 255.0
  axes = tuple(range(target.ndim - 1))
  model = np.mean((reconstructed - target) ** 2, axis=axes)
  black = np.mean(target**2, axis=axes)
  scores = {"recon_mse": float(model.mean()), "black_mse": float(black.mean())}
  names = "rgb" if len(model) == 3 else [str(c) for c in range(len(model))]
  for name, m, b in zip(names, model, black, strict=True):
    scores[f"recon_mse_{name}"], scores[f"black_mse_{name}"] = float(m), float(b)
  return scores


def _test_videos(config: ml_collections.ConfigDict, mesh, num_videos: int, frames: int):
  batch = next(
    input_pipeline.create_eval_iterator(
      config.dataset,
      split="test",
      global_batch_size=num_videos,
      sharding=sharding.batch_sharding(mesh),
      num_frames=frames,
      num_sequences=num_videos,
    )
  )
  return np.asarray(batch["video"])


def score_checkpoints(
  config: ml_collections.ConfigDict,
  workdir: str,
  num_videos: int = 64,
  num_frames: int = 10,
) -> list[dict[str, Any]]:
  """Scores every kept checkpoint of `workdir` not scored yet; returns all
  scores, one dict per step, sorted by step."""
  mesh = sharding.create_mesh()
  info = prepared.dataset_info(config.dataset)
  out_dir = epath.Path(workdir) / CURVES_DIR
  out_dir.mkdir(parents=True, exist_ok=True)
  path = out_dir / SCORES_FILE
  scores = (
    [json.loads(line) for line in path.read_text().splitlines()]
    if path.exists()
    else []
  )
  done = {s["step"] for s in scores}
  with checkpointing.Checkpointer(workdir, config, info) as checkpoints:
    steps = [s for s in sorted(checkpoints.manager.all_steps()) if s not in done]
  if not steps:
    logging.info("Every checkpoint of %s is scored already.", workdir)
    return sorted(scores, key=lambda s: s["step"])
  video = _test_videos(config, mesh, num_videos, num_frames)
  reconstruct = swap_decode = encode = None
  vanished = []
  for step in steps:
    try:
      networks, main, _ = restore.load_main_network(config, workdir, info, step=step)
    except checkpointing.CheckpointError:
      if (epath.Path(workdir) / "checkpoints" / str(step)).exists():
        raise
      logging.warning(
        "The checkpoint of step %d went while it was being scored (the run is "
        "still training and rotating its checkpoints): skipped.",
        step,
      )
      vanished.append(step)
      continue
    if reconstruct is None:  # jitted once: every step has the same networks
      reconstruct = jax.jit(functools.partial(_reconstruct, networks))
      swap_decode = jax.jit(functools.partial(autoencoder.swap_decode, networks))
      encode = mig_scores.make_encode_fn(networks, mesh)
    reconstructed = np.asarray(reconstruct(main["params"], main["batch_stats"], video))
    row = {"step": step, "method": config.method}
    row.update(reconstruction_errors(reconstructed, video))
    mig, _ = mig_scores.evaluate_mig(config, info, encode, main, mesh)
    row.update({k: v for k, v in mig.items() if isinstance(v, float)})
    grid = np.asarray(
      swap_decode(main["params"], main["batch_stats"], video[:4, 0], video[0, :8])
    )
    image = visualize.labelled(
      visualize.swap_grid_image(video[:4, 0], video[0, :8], grid),
      f"{config.method.upper()} {os.path.basename(os.path.normpath(workdir))}, "
      f"step {step}: swap grid",
      *visualize.SWAP_GRID_LABELS,
    )
    (out_dir / f"swap_grid_{step:07d}.png").write_bytes(visualize.encode_png(image))
    logging.info(
      "Step %d: MIG %.4f ± %.4f (oracle %.4f, one object %s), recon %.5f.",
      step,
      row["MIG"],
      row["MIG_ci95"],
      row["oracle_MIG"],
      "-" if "one_object_MIG" not in row else f"{row['one_object_MIG']:.4f}",
      row["recon_mse"],
    )
    with path.open("a") as f:
      f.write(json.dumps(eval_outputs.json_ready(row)) + "\n")
    scores.append(row)
  if vanished:
    logging.warning(
      "%s is still being written: %d checkpoint(s) went before they were "
      "scored; run --mode=curves again to score the ones it keeps.",
      workdir,
      len(vanished),
    )
  return sorted(scores, key=lambda s: s["step"])


def train_scalars(workdir: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """{tag: (steps, values)} of the run's TensorBoard training scalars."""
  curves: dict[str, dict[int, float]] = {}
  for events in sorted(glob.glob(os.path.join(workdir, "events.out.tfevents.*"))):
    accumulator = event_accumulator.EventAccumulator(
      events, size_guidance={event_accumulator.TENSORS: 0}
    )
    accumulator.Reload()
    for tag in accumulator.Tags()["tensors"]:
      if tag.startswith("train_"):
        for event in accumulator.Tensors(tag):
          value = tensor_util.make_ndarray(event.tensor_proto)
          if value.ndim == 0:
            curves.setdefault(tag, {})[event.step] = float(value)
  return {
    tag: (np.array(sorted(c)), np.array([c[s] for s in sorted(c)]))
    for tag, c in curves.items()
  }


def _scores(workdir: str) -> list[dict[str, Any]]:
  path = epath.Path(workdir) / CURVES_DIR / SCORES_FILE
  if not path.exists():
    raise FileNotFoundError(
      f"{path} does not exist: score the run first with `python -m mipae_jax.main "
      f"--mode=curves --config=... --workdir={workdir}`."
    )
  rows = [json.loads(line) for line in path.read_text().splitlines()]
  return sorted(rows, key=lambda s: s["step"])


def plot_learning_curves(workdirs: Sequence[str], out_path: str) -> str:
  """One figure over runs: MIG with its interval, ceiling and one-object
  ceiling, each object's captured shares of its content (z_c) and pose
  (z_p) factors, test reconstruction (all channels, then red and green each as a fraction of
  the all-black error: near 1, the decoder does not draw that sprite), and
  the training scalars."""
  figure = matplotlib.figure.Figure(figsize=(18, 3.6), layout="constrained")
  backend_agg.FigureCanvasAgg(figure)
  mig_axis, captured_axis, recon_axis, channel_axis, train_axis, critic_axis = (
    figure.subplots(1, 6)
  )
  for workdir in workdirs:
    rows = _scores(workdir)
    label = (
      f"{rows[0]['method'].upper()} ({os.path.basename(os.path.normpath(workdir))})"
    )
    steps = np.array([r["step"] for r in rows])
    mig = np.array([r["MIG"] for r in rows])
    ci = np.array([r.get("MIG_ci95") or 0.0 for r in rows])
    (line,) = mig_axis.plot(steps, mig, marker=".", label=label)
    mig_axis.fill_between(steps, mig - ci, mig + ci, alpha=0.2, color=line.get_color())
    mig_axis.plot(
      steps, [r["oracle_MIG"] for r in rows], ls="--", color=line.get_color()
    )
    if "one_object_MIG" in rows[0]:
      mig_axis.plot(
        steps, [r["one_object_MIG"] for r in rows], ls=":", color=line.get_color()
      )
    for key in rows[0]:
      if key.startswith(("content_captured[", "pose_captured[")):
        name = key[key.index("[") + 1 : -1]
        style = ("-" if key.startswith("content") else "--") + (
          "o" if name.endswith("0") else "s"
        )
        captured_axis.plot(
          steps,
          [r[key] for r in rows],
          style,
          color=line.get_color(),
          markersize=3,
          label=f"{label}: {key.split('_')[0]} {name}",
        )
    recon_axis.plot(steps, [r["recon_mse"] for r in rows], marker=".", label=label)
    for channel, style in (("r", ":v"), ("g", "-^")):
      if f"recon_mse_{channel}" in rows[0]:
        ratio = [r[f"recon_mse_{channel}"] / r[f"black_mse_{channel}"] for r in rows]
        channel_axis.plot(
          steps, ratio, style, color=line.get_color(), label=f"{label}: {channel}"
        )
    scalars = train_scalars(workdir)
    if "train_recon_loss" in scalars:
      train_axis.plot(*scalars["train_recon_loss"], label=label)
    for tag in ("train_critic_accuracy", "train_discriminator_accuracy"):
      if tag in scalars:
        critic_axis.plot(*scalars[tag], label=f"{label}: {tag[6:]}")
  for axis, title in (
    (mig_axis, "test MIG (dashed: oracle, dotted: one-object oracle)"),
    (captured_axis, "I(f^s; z) / H(f^s) per object"),
    (recon_axis, "test reconstruction MSE"),
    (channel_axis, "test MSE per channel / all-black MSE"),
    (train_axis, "train reconstruction loss"),
    (critic_axis, "train critic / discriminator accuracy"),
  ):
    axis.set_title(title, fontsize=9)
    axis.set_xlabel("step")
    axis.legend(fontsize=7)
  train_axis.set_yscale("log")
  figure.savefig(out_path, dpi=110)
  return out_path


def learning_curves(
  config: ml_collections.ConfigDict, workdir: str, plot_with: Sequence[str] = ()
) -> str:
  """Scores `workdir`'s checkpoints, then plots it with the (already scored)
  runs of `plot_with`; returns the plot's path."""
  score_checkpoints(config, workdir)
  return plot_learning_curves(
    [workdir, *plot_with], os.path.join(workdir, CURVES_DIR, PLOT_FILE)
  )
