"""Trains our MIPAE / DRNET step and the PyTorch peer of the authors' step
(benchmarks/torch_train_peer.py) on the same videos, batch and number of
steps, and prints their learning curves side by side.

  python benchmarks/compare_with_peer.py --method=mipae --steps=200 \
      --batch_size=16 --log_every=50 --torch_python=/work/torchvenv/bin/python

The first --num_videos training videos of the config's dataset (first
config.dataset.num_frames frames) are exported to an .npz; both sides draw
their two batches per step (critic's first) from shuffled epochs over exactly
those videos, each with its own seeded shuffling. Our side runs
train.make_train_step; the peer runs in --torch_python as a subprocess
(mipae-jax never imports torch). Each row is the mean over the last
--log_every steps.
"""

import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np
from absl import app, flags

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from mipae_jax import feeds, sharding, train, train_state  # noqa: E402
from mipae_jax.configs import drnet_dsprites, mipae_dsprites  # noqa: E402
from mipae_jax.datasets import prepared
from mipae_jax.models.networks import build_networks  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_enum("method", "mipae", ["mipae", "drnet"], "Objective of both sides.")
flags.DEFINE_integer("steps", 200, "Training steps of each side.")
flags.DEFINE_integer("batch_size", 16, "Videos per batch (two batches per step).")
flags.DEFINE_integer("log_every", 50, "Steps averaged into one row.")
flags.DEFINE_integer("num_videos", 2000, "Training videos exported and used.")
flags.DEFINE_integer("seed", 0, "Seed of both sides.")
flags.DEFINE_string(
  "builder_config", None, "TFDS builder config (default: the config's)."
)
flags.DEFINE_string("data_dir", None, "TFDS data_dir.")
flags.DEFINE_string(
  "conv_impl", None, "model.conv_impl of our side (default: the config's)."
)
flags.DEFINE_string("torch_python", "/work/torchvenv/bin/python", "Python with torch.")
flags.DEFINE_integer("torch_threads", 2, "torch.set_num_threads of the peer.")
flags.DEFINE_string(
  "workdir", None, "Where the npz and curves go (default: a temp dir)."
)
flags.DEFINE_string(
  "skip", None, "'ours' or 'authors' to run one side only (debugging)."
)

_PEER = pathlib.Path(__file__).resolve().parent / "torch_train_peer.py"


def _config():
  module = mipae_dsprites if FLAGS.method == "mipae" else drnet_dsprites
  config = module.get_config()
  if FLAGS.builder_config:
    config.dataset.builder_config = FLAGS.builder_config
  if FLAGS.data_dir:
    config.dataset.data_dir = FLAGS.data_dir
  if FLAGS.conv_impl:
    config.model.conv_impl = FLAGS.conv_impl
  config.batch_size = FLAGS.batch_size
  config.seed = FLAGS.seed
  return config


def export_videos(config, path: pathlib.Path) -> np.ndarray:
  """The first --num_videos training videos, uint8 [N, T, 64, 64, 3]."""
  builder = prepared.prepare_dataset(config.dataset)
  source = builder.as_data_source("train")
  count = min(FLAGS.num_videos, len(source))
  frames = config.dataset.num_frames
  videos = np.stack(
    [np.asarray(source[i]["video"][:frames], np.uint8) for i in range(count)]
  )
  np.savez(path, videos=videos)
  return videos


class _Epochs:
  """Shuffled epochs over the exported videos, incomplete last batch dropped
  (the same scheme as the peer's, with numpy's generator)."""

  def __init__(self, videos, batch_size, seed, batch_sharding):
    self.videos, self.batch_size = videos, batch_size
    self.rng = np.random.default_rng(seed)
    self.sharding = batch_sharding
    self.order, self.pos = None, 0

  def __next__(self):
    if self.order is None or self.pos + self.batch_size > len(self.videos):
      self.order, self.pos = self.rng.permutation(len(self.videos)), 0
    index = self.order[self.pos : self.pos + self.batch_size]
    self.pos += self.batch_size
    return {"video": jax.device_put(self.videos[index], self.sharding)}


def train_ours(config, videos) -> list[dict]:
  mesh = sharding.create_mesh()
  networks = build_networks(config, 3)
  state, state_sharding = train_state.init_state(networks, config, mesh, (64, 64, 3))
  step_fn = train.make_train_step(networks, config, mesh, state_sharding)
  batches = _Epochs(
    videos, FLAGS.batch_size, FLAGS.seed + 1, sharding.batch_sharding(mesh)
  )
  base_rng = jax.random.fold_in(jax.random.PRNGKey(config.seed), 1)
  curve, window, start = [], None, time.time()
  for step in range(1, FLAGS.steps + 1):
    batch = feeds.next_batch(batches)
    state, metrics = step_fn(state, batch, jax.random.fold_in(base_rng, step))
    window = metrics if window is None else window.merge(metrics)
    if step % FLAGS.log_every == 0 or step == FLAGS.steps:
      row = {k: float(v) for k, v in window.compute().items()}
      if FLAGS.method == "drnet":
        row["critic_loss"] = row.pop("discriminator_loss")
        row["critic_accuracy"] = row.pop("discriminator_accuracy")
      row.update(step=step, seconds=time.time() - start)
      curve.append(row)
      print("ours", json.dumps(row), flush=True)
      window = None
  return curve


def train_authors(npz: pathlib.Path, out: pathlib.Path) -> list[dict]:
  command = [
    FLAGS.torch_python,
    str(_PEER),
    f"--videos={npz}",
    f"--method={FLAGS.method}",
    f"--steps={FLAGS.steps}",
    f"--batch_size={FLAGS.batch_size}",
    f"--log_every={FLAGS.log_every}",
    f"--seed={FLAGS.seed}",
    f"--threads={FLAGS.torch_threads}",
    f"--out={out}",
  ]
  subprocess.run(command, check=True)
  return json.loads(out.read_text())["curve"]


def _fmt(row, key, spec=".5f"):
  return "-" if row is None or key not in row else format(row[key], spec)


def main(argv):
  del argv
  config = _config()
  workdir = pathlib.Path(FLAGS.workdir or tempfile.mkdtemp(prefix="compare_peer_"))
  workdir.mkdir(parents=True, exist_ok=True)
  npz = workdir / "videos.npz"
  videos = export_videos(config, npz)
  print(
    f"# exported {videos.shape} uint8 from {config.dataset.name}/"
    f"{config.dataset.builder_config} to {npz}",
    flush=True,
  )

  ours = [] if FLAGS.skip == "ours" else train_ours(config, videos)
  (workdir / "ours.json").write_text(json.dumps(ours))
  authors = (
    [] if FLAGS.skip == "authors" else train_authors(npz, workdir / "authors.json")
  )

  second = "mi_estimate" if FLAGS.method == "mipae" else "adversarial_loss"
  label = "MI" if FLAGS.method == "mipae" else "adv"
  by_step = {r["step"]: r for r in authors}
  print(
    f"\n{FLAGS.method}, {videos.shape[0]} videos x {videos.shape[1]} frames of "
    f"{config.dataset.name}/{config.dataset.builder_config}, batch {FLAGS.batch_size}, "
    f"{FLAGS.steps} steps, mean over {FLAGS.log_every} steps; "
    f"JAX {jax.__version__} on {jax.devices()[0].platform}, os.cpu_count={os.cpu_count()}\n"
  )
  print(
    f"| step | recon ours | recon authors' | {label} ours | {label} authors' | "
    "critic loss ours | critic loss authors' | critic acc ours | critic acc authors' | "
    "sim ours | sim authors' |"
  )
  print("|---|---|---|---|---|---|---|---|---|---|---|")
  steps = sorted({r["step"] for r in ours} | set(by_step))
  ours_by_step = {r["step"]: r for r in ours}
  for step in steps:
    a, b = ours_by_step.get(step), by_step.get(step)
    print(
      f"| {step} | {_fmt(a, 'recon_loss')} | {_fmt(b, 'recon_loss')} | "
      f"{_fmt(a, second, '.4f')} | {_fmt(b, second, '.4f')} | "
      f"{_fmt(a, 'critic_loss', '.4f')} | {_fmt(b, 'critic_loss', '.4f')} | "
      f"{_fmt(a, 'critic_accuracy', '.3f')} | {_fmt(b, 'critic_accuracy', '.3f')} | "
      f"{_fmt(a, 'sim_loss', '.2e')} | {_fmt(b, 'sim_loss', '.2e')} |"
    )
  for name, curve in (("ours", ours), ("authors'", authors)):
    if curve:
      print(f"\n{name}: {curve[-1]['seconds'] / curve[-1]['step']:.3f} s/step")


if __name__ == "__main__":
  app.run(main)
