"""PyTorch peers of the DRNET main step and the stage-2 pose-LSTM step.

  /path/to/torch-venv/bin/python benchmarks/torch_step_reference.py drnet 16
  /path/to/torch-venv/bin/python benchmarks/torch_step_reference.py lstm 100 --horizon=10

`../shared/bench/ref_mipae_torch.py` is the peer of the MIPAE step; this
script completes the set with the same DCGAN 64x64 networks, shaped like the
authors' reference solvers:

- drnet: E_c on two frames (the second detached), E_p on two frames, D on
  (z_c^t, z_p^{t+k}), DRNET's adversarial pose loss against a scene
  discriminator (two hidden layers of 256), then the discriminator's own BCE
  update; one Adam per side (lr 0.002, b1 0.5).
- lstm: stage 2, the main network frozen and in eval mode: E_p of all
  C + T frames and E_c of the last context frame under no_grad, then a
  linear embedding, two LSTMCells of 256, a linear output with tanh, rolled
  over C + T - 1 steps as in eq. 7 (given poses for the context, its own
  predictions after), l2 loss against E_p's poses, Adam (lr 2e-4).

Prints `median_s_per_step=...` after two warm-up steps, as the shared script
does, so benchmarks/train_throughput.py can read either. Run it in an
environment that has torch; mipae-jax never imports it.
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch_layer_reference import conv_block, decoder  # the same DCGAN decoder

_CHANNELS, _FRAMES, _CONTENT_DIM, _POSE_DIM, _CONTEXT = 3, 15, 128, 5, 5


def encoder(dim: int) -> nn.Sequential:
  """DCGAN 64x64 encoder to a [B, dim, 1, 1] code in [-1, 1].

  BatchNorm follows every block, the first too, as in mipae-jax's
  DCGANEncoder (the shared MIPAE script and torch_layer_reference.py leave
  it out of the first block).
  """
  channels = (_CHANNELS, 64, 128, 256, 512)
  blocks = [
    conv_block(nn.Conv2d(cin, cout, 4, 2, 1), cout)
    for cin, cout in zip(channels[:-1], channels[1:], strict=True)
  ]
  return nn.Sequential(
    *blocks, nn.Conv2d(512, dim, 4, 1, 0), nn.BatchNorm2d(dim), nn.Tanh()
  )


def pair_mlp(hidden: int) -> nn.Sequential:
  return nn.Sequential(
    nn.Linear(2 * _POSE_DIM, hidden),
    nn.ReLU(),
    nn.Linear(hidden, hidden),
    nn.ReLU(),
    nn.Linear(hidden, 1),
  )


def drnet_step_fn(batch: int):
  """One DRNET update of E_c, E_p, D, then one of the scene discriminator."""
  content_encoder, pose_encoder, dec = (
    encoder(_CONTENT_DIM),
    encoder(_POSE_DIM),
    decoder(),
  )
  discriminator = pair_mlp(256)
  main_params = [
    *content_encoder.parameters(),
    *pose_encoder.parameters(),
    *dec.parameters(),
  ]
  opt = torch.optim.Adam(main_params, lr=2e-3, betas=(0.5, 0.999))
  opt_d = torch.optim.Adam(discriminator.parameters(), lr=2e-3, betas=(0.5, 0.999))
  video = torch.rand(_FRAMES, batch, _CHANNELS, 64, 64)
  partner = torch.roll(torch.arange(batch), 1)

  def step() -> float:
    k = int(torch.randint(1, _FRAMES, ()))
    x_t, x_tk = video[0], video[k]
    content_t, content_tk = content_encoder(x_t), content_encoder(x_tk).detach()
    pose_t, pose_tk = pose_encoder(x_t).flatten(1), pose_encoder(x_tk).flatten(1)
    recon = F.mse_loss(dec(torch.cat([content_t, pose_tk[..., None, None]], 1)), x_tk)
    sim = F.mse_loss(content_t, content_tk)
    joint = discriminator(torch.cat([pose_t, pose_tk], 1))
    adversarial = F.binary_cross_entropy_with_logits(joint, torch.full_like(joint, 0.5))
    opt.zero_grad()
    (recon + sim + 1e-4 * adversarial).backward()
    opt.step()
    a, b = pose_t.detach(), pose_tk.detach()
    same = discriminator(torch.cat([a, b], 1))
    different = discriminator(torch.cat([a, b[partner]], 1))
    loss_d = 0.5 * (
      F.binary_cross_entropy_with_logits(same, torch.ones_like(same))
      + F.binary_cross_entropy_with_logits(different, torch.zeros_like(different))
    )
    opt_d.zero_grad()
    loss_d.backward()
    opt_d.step()
    return recon.item()

  return step


class PoseLSTM(nn.Module):
  """Embedding, two LSTMCells of 256, linear output with tanh (Sec. IV-A)."""

  def __init__(self, hidden: int = 256):
    super().__init__()
    self.embed = nn.Linear(_CONTENT_DIM + _POSE_DIM, hidden)
    self.cells = nn.ModuleList([nn.LSTMCell(hidden, hidden) for _ in range(2)])
    self.output = nn.Linear(hidden, _POSE_DIM)

  def forward(self, content, poses, steps: int):
    """Eq. 7: given poses for the context, own predictions after it."""
    batch = content.shape[0]
    states = [(content.new_zeros(batch, 256), content.new_zeros(batch, 256))] * 2
    predictions, previous = [], None
    for t in range(steps):
      pose_in = poses[:, t] if t < _CONTEXT else previous
      h = self.embed(torch.cat([content, pose_in], 1))
      new_states = []
      for cell, state in zip(self.cells, states, strict=True):
        state = cell(h, state)
        new_states.append(state)
        h = state[0]
      states = new_states
      previous = torch.tanh(self.output(h))
      predictions.append(previous)
    return torch.stack(predictions, 1)


def lstm_step_fn(batch: int, horizon: int):
  """One stage-2 update: frozen encoders in eval mode, Adam on the LSTM."""
  content_encoder, pose_encoder = (
    encoder(_CONTENT_DIM).eval(),
    encoder(_POSE_DIM).eval(),
  )
  lstm = PoseLSTM()
  opt = torch.optim.Adam(lstm.parameters(), lr=2e-4, betas=(0.9, 0.999))
  frames = _CONTEXT + horizon
  video = torch.rand(batch, frames, _CHANNELS, 64, 64)

  def step() -> float:
    with torch.no_grad():
      poses = pose_encoder(video.flatten(0, 1)).reshape(batch, frames, _POSE_DIM)
      content = content_encoder(video[:, _CONTEXT - 1]).flatten(1)
    predicted = lstm(content, poses, frames - 1)
    loss = F.mse_loss(predicted, poses[:, 1:])
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()

  return step


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("step", choices=("drnet", "lstm"))
  parser.add_argument("batch", type=int)
  parser.add_argument("steps", type=int, nargs="?", default=5)
  parser.add_argument("--horizon", type=int, default=10, help="lstm: future frames")
  args = parser.parse_args()
  torch.manual_seed(0)
  step = (
    drnet_step_fn(args.batch)
    if args.step == "drnet"
    else lstm_step_fn(args.batch, args.horizon)
  )
  for _ in range(2):
    step()
  times = []
  for _ in range(args.steps):
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
  print(
    f"torch {torch.__version__} threads={torch.get_num_threads()} step={args.step} "
    f"batch={args.batch} median_s_per_step={statistics.median(times):.3f} "
    f"min={min(times):.3f}"
  )


if __name__ == "__main__":
  main()
