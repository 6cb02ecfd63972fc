"""PyTorch peer of the authors' whole MIPAE / DRNET training step, trained on
videos exported by benchmarks/compare_with_peer.py (runs in a torch venv; the
project itself never imports torch).

  python benchmarks/torch_train_peer.py --videos=videos.npz --method=mipae \
      --steps=200 --batch_size=16 --log_every=50 --out=curve.json

The step follows the authors' SolverAutoencoder.train_step (blackPython/mipae,
solver.py), written here from its description: DCGAN 64x64 encoders (content
128, pose 5) and mirrored decoder, a 512-wide critic on concatenated pose
pairs, N(0, 0.02) init, two Adam optimisers (lr 2e-3, betas 0.5/0.999), all
nets in train mode. Each step draws two batches from shuffled epochs over the
videos: the critic's first, then the main network's.

Logs every --log_every steps the mean over those steps of recon, sim, the MI
estimate (mipae) or adversarial loss (drnet), the critic loss and accuracy;
one JSON object per line on stdout and, with --out, the whole curve as JSON.
"""

import argparse
import json
import random
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def _conv_block(cin, cout):
  return nn.Sequential(
    nn.Conv2d(cin, cout, 4, 2, 1), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2)
  )


def _deconv_block(cin, cout):
  return nn.Sequential(
    nn.ConvTranspose2d(cin, cout, 4, 2, 1), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2)
  )


class Encoder(nn.Module):
  """DCGAN 64x64 encoder: 64-128-256-512 strided blocks, then a 4x4 valid
  conv to `dim`, BatchNorm, Tanh. Returns (code [B, dim, 1, 1], skips)."""

  def __init__(self, dim, nc=3, nf=64):
    super().__init__()
    self.blocks = nn.ModuleList(
      [
        _conv_block(nc, nf),
        _conv_block(nf, nf * 2),
        _conv_block(nf * 2, nf * 4),
        _conv_block(nf * 4, nf * 8),
      ]
    )
    self.last = nn.Sequential(
      nn.Conv2d(nf * 8, dim, 4, 1, 0), nn.BatchNorm2d(dim), nn.Tanh()
    )

  def forward(self, x):
    skips = []
    for block in self.blocks:
      x = block(x)
      skips.append(x)
    return self.last(x), skips


class Decoder(nn.Module):
  """Mirror of the encoder on the concatenated (content, pose) code."""

  def __init__(self, dim, nc=3, nf=64):
    super().__init__()
    self.net = nn.Sequential(
      nn.ConvTranspose2d(dim, nf * 8, 4, 1, 0),
      nn.BatchNorm2d(nf * 8),
      nn.LeakyReLU(0.2),
      _deconv_block(nf * 8, nf * 4),
      _deconv_block(nf * 4, nf * 2),
      _deconv_block(nf * 2, nf),
      nn.ConvTranspose2d(nf, nc, 4, 2, 1),
      nn.Sigmoid(),
    )

  def forward(self, content, pose):
    return self.net(torch.cat([content, pose], dim=1))


class SceneDiscriminator(nn.Module):
  """Critic on a pair of pose codes: Linear(2p, nf)-ReLU-Linear-ReLU-Linear(1)."""

  def __init__(self, pose_dim, nf=512):
    super().__init__()
    self.net = nn.Sequential(
      nn.Linear(2 * pose_dim, nf),
      nn.ReLU(),
      nn.Linear(nf, nf),
      nn.ReLU(),
      nn.Linear(nf, 1),
    )

  def forward(self, a, b):
    return self.net(torch.cat([a.flatten(1), b.flatten(1)], dim=1))


def init_weights(module):
  """Conv / Linear weights N(0, 0.02), bias 0; BatchNorm weight N(1, 0.02), bias 0."""
  name = module.__class__.__name__
  if "Conv" in name or "Linear" in name:
    module.weight.data.normal_(0.0, 0.02)
    if module.bias is not None:
      module.bias.data.zero_()
  elif "BatchNorm" in name:
    module.weight.data.normal_(1.0, 0.02)
    module.bias.data.zero_()


class Batches:
  """Shuffled epochs over the videos, dropping the incomplete last batch."""

  def __init__(self, videos, batch_size, generator):
    self.videos, self.batch_size, self.generator = videos, batch_size, generator
    self.order, self.pos = None, 0

  def next(self):
    n = self.videos.shape[0]
    if self.order is None or self.pos + self.batch_size > n:
      self.order = torch.randperm(n, generator=self.generator).numpy()
      self.pos = 0
    index = self.order[self.pos : self.pos + self.batch_size]
    self.pos += self.batch_size
    # [B, T, H, W, C] uint8 -> [T, B, C, H, W] float in [0, 1].
    x = torch.from_numpy(self.videos[index]).float().div_(255.0)
    return x.permute(1, 0, 4, 2, 3).contiguous()


def _accuracy(joint, marginal):
  return 0.5 * ((joint > 0).float().mean() + (marginal < 0).float().mean()).item()


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument(
    "--videos", required=True, help=".npz with uint8 'videos' [N, T, 64, 64, 3]"
  )
  parser.add_argument("--method", choices=["mipae", "drnet"], default="mipae")
  parser.add_argument("--steps", type=int, default=200)
  parser.add_argument("--batch_size", type=int, default=16)
  parser.add_argument("--log_every", type=int, default=50)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--threads", type=int, default=2)
  parser.add_argument("--content_dim", type=int, default=128)
  parser.add_argument("--pose_dim", type=int, default=5)
  parser.add_argument("--lr", type=float, default=2e-3)
  parser.add_argument("--sim_weight", type=float, default=1.0)
  parser.add_argument("--mi_weight", type=float, default=1e-4)
  parser.add_argument("--out", default=None, help="JSON file for the whole curve")
  args = parser.parse_args()

  torch.set_num_threads(args.threads)
  random.seed(args.seed)
  np.random.seed(args.seed)
  torch.manual_seed(args.seed)
  data_gen = torch.Generator().manual_seed(args.seed + 1)

  videos = np.load(args.videos)["videos"]
  num_frames = videos.shape[1]
  batches = Batches(videos, args.batch_size, data_gen)

  content_enc = Encoder(args.content_dim)
  pose_enc = Encoder(args.pose_dim)
  decoder = Decoder(args.content_dim + args.pose_dim)
  critic = SceneDiscriminator(args.pose_dim, 512)
  for net in (content_enc, pose_enc, decoder, critic):
    net.apply(init_weights)
    net.train()
  betas = (0.5, 0.999)
  opt_main = torch.optim.Adam(
    list(content_enc.parameters())
    + list(pose_enc.parameters())
    + list(decoder.parameters()),
    lr=args.lr,
    betas=betas,
  )
  opt_critic = torch.optim.Adam(critic.parameters(), lr=args.lr, betas=betas)
  mse = nn.MSELoss()
  second = "mi_estimate" if args.method == "mipae" else "adversarial_loss"
  names = ["loss", "recon_loss", "sim_loss", second, "critic_loss", "critic_accuracy"]
  window = {name: [] for name in names}
  curve = []
  start = time.time()

  for step in range(1, args.steps + 1):
    # 1. The critic on its own batch, pose codes detached.
    x = batches.next()
    i = random.randint(0, num_frames - 1)
    j = random.randint(0, num_frames - 1)
    h1 = pose_enc(x[i])[0].detach()
    h2 = pose_enc(x[j])[0].detach()
    perm = torch.randperm(args.batch_size)
    joint = critic(h1, h2)
    marginal = critic(h1, h2[perm])
    if args.method == "mipae":
      disc_loss = F.softplus(-joint).mean() + F.softplus(marginal).mean()
    else:
      disc_loss = 0.5 * F.binary_cross_entropy(
        torch.sigmoid(joint), torch.ones_like(joint)
      ) + 0.5 * F.binary_cross_entropy(
        torch.sigmoid(marginal), torch.zeros_like(marginal)
      )
    opt_critic.zero_grad()
    disc_loss.backward()
    opt_critic.step()
    critic_acc = _accuracy(joint.detach(), marginal.detach())

    # 2. E_c, E_p, D on a new batch against the updated critic.
    x = batches.next()
    k = random.randint(1, num_frames - 1)
    hc, _skips = content_enc(x[0])
    hc1 = content_enc(x[k])[0].detach()
    hp = pose_enc(x[k])[0]
    hp1 = pose_enc(x[random.randint(0, num_frames - 1)])[0].detach()
    sim = mse(hc, hc1)
    rec = mse(decoder(hc, hp), x[k])
    if args.method == "mipae":
      out_t = critic(hp, hp1)
      out_f = critic(hp, hp1[torch.randperm(args.batch_size)])
      extra = out_t.mean() - torch.exp(out_f).mean() + 1.0
    else:
      extra = F.binary_cross_entropy(
        torch.sigmoid(critic(hp, hp1)), torch.full((args.batch_size, 1), 0.5)
      )
    loss = rec + args.sim_weight * sim + args.mi_weight * extra
    opt_main.zero_grad()
    loss.backward()
    opt_main.step()

    values = [
      loss.item(),
      rec.item(),
      sim.item(),
      extra.item(),
      disc_loss.item(),
      critic_acc,
    ]
    for name, value in zip(names, values, strict=True):
      window[name].append(value)
    if step % args.log_every == 0 or step == args.steps:
      row = {"step": step, **{n: float(np.mean(v)) for n, v in window.items()}}
      row["seconds"] = time.time() - start
      curve.append(row)
      print(json.dumps(row), flush=True)
      window = {name: [] for name in names}

  if args.out:
    with open(args.out, "w") as f:
      json.dump(
        {"method": args.method, "batch_size": args.batch_size, "curve": curve}, f
      )


if __name__ == "__main__":
  main()
