"""PyTorch peer of benchmarks/layer_throughput.py: the same DCGAN 64x64 convs.

  /path/to/torch-venv/bin/python benchmarks/torch_layer_reference.py --batch_sizes=16,100

Times forward + backward of each strided / transposed convolution of the
DCGAN encoder and decoder alone, then of the whole encoder and decoder (with
BatchNorm and activations, as in ../shared/bench/ref_mipae_torch.py), in
PyTorch on the CPU, best of `--rounds` calls after two warm-up calls. Run it
in an environment that has torch; mipae-jax never imports it. Prints a
Markdown table to set beside layer_throughput.py's.
"""

import argparse
import time

import torch
from torch import nn

_IMAGE_CHANNELS, _CONTENT_DIM, _POSE_DIM = 3, 128, 5

# name, layer, input [C, H, W]; the names match layer_throughput.py's rows.
_LAYERS = (
  ("enc1 64x64x3->32x32x64", nn.Conv2d(3, 64, 4, 2, 1), (3, 64, 64)),
  ("enc2 32x32x64->16x16x128", nn.Conv2d(64, 128, 4, 2, 1), (64, 32, 32)),
  ("enc3 16x16x128->8x8x256", nn.Conv2d(128, 256, 4, 2, 1), (128, 16, 16)),
  ("enc4 8x8x256->4x4x512", nn.Conv2d(256, 512, 4, 2, 1), (256, 8, 8)),
  ("enc5 4x4x512->1x1x128", nn.Conv2d(512, 128, 4, 1, 0), (512, 4, 4)),
  ("dec1 1x1x133->4x4x512", nn.ConvTranspose2d(133, 512, 4, 1, 0), (133, 1, 1)),
  ("dec2 4x4x512->8x8x256", nn.ConvTranspose2d(512, 256, 4, 2, 1), (512, 4, 4)),
  ("dec3 8x8x256->16x16x128", nn.ConvTranspose2d(256, 128, 4, 2, 1), (256, 8, 8)),
  ("dec4 16x16x128->32x32x64", nn.ConvTranspose2d(128, 64, 4, 2, 1), (128, 16, 16)),
  ("dec5 32x32x64->64x64x3", nn.ConvTranspose2d(64, 3, 4, 2, 1), (64, 32, 32)),
)


def conv_block(layer: nn.Module, channels: int) -> nn.Sequential:
  return nn.Sequential(layer, nn.BatchNorm2d(channels), nn.LeakyReLU(0.2))


def encoder() -> nn.Sequential:
  """DCGAN 64x64 encoder (latent 128), as the reference step's."""
  return nn.Sequential(
    nn.Conv2d(_IMAGE_CHANNELS, 64, 4, 2, 1),
    nn.LeakyReLU(0.2),
    conv_block(nn.Conv2d(64, 128, 4, 2, 1), 128),
    conv_block(nn.Conv2d(128, 256, 4, 2, 1), 256),
    conv_block(nn.Conv2d(256, 512, 4, 2, 1), 512),
    nn.Conv2d(512, _CONTENT_DIM, 4, 1, 0),
    nn.BatchNorm2d(_CONTENT_DIM),
    nn.Tanh(),
  )


def decoder() -> nn.Sequential:
  """DCGAN 64x64 decoder from content + pose codes, as the reference step's."""
  return nn.Sequential(
    conv_block(nn.ConvTranspose2d(_CONTENT_DIM + _POSE_DIM, 512, 4, 1, 0), 512),
    conv_block(nn.ConvTranspose2d(512, 256, 4, 2, 1), 256),
    conv_block(nn.ConvTranspose2d(256, 128, 4, 2, 1), 128),
    conv_block(nn.ConvTranspose2d(128, 64, 4, 2, 1), 64),
    nn.ConvTranspose2d(64, _IMAGE_CHANNELS, 4, 2, 1),
    nn.Sigmoid(),
  )


def best_seconds(module: nn.Module, inputs: torch.Tensor, rounds: int) -> float:
  """Best wall time of forward + backward of sum(module(inputs))."""

  def call():
    module.zero_grad()
    module(inputs).sum().backward()

  call()
  call()
  times = []
  for _ in range(rounds):
    start = time.perf_counter()
    call()
    times.append(time.perf_counter() - start)
  return min(times)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch_sizes", default="100,16")
  parser.add_argument("--rounds", type=int, default=5)
  args = parser.parse_args()
  torch.manual_seed(0)
  print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, float32")
  print("| layer or network (fwd+bwd) | batch | PyTorch (ms) |")
  print("|---|---|---|")
  for batch_size in map(int, args.batch_sizes.split(",")):
    for name, layer, shape in _LAYERS:
      # The image layer's input needs no gradient, as in layer_throughput.py.
      inputs = torch.rand(batch_size, *shape, requires_grad=not name.startswith("enc1"))
      seconds = best_seconds(layer, inputs, args.rounds)
      print(f"| {name} | {batch_size} | {1e3 * seconds:.1f} |", flush=True)
    networks = (
      ("encoder (latent 128)", encoder(), (_IMAGE_CHANNELS, 64, 64)),
      ("decoder (3 channels)", decoder(), (_CONTENT_DIM + _POSE_DIM, 1, 1)),
    )
    for name, network, shape in networks:
      seconds = best_seconds(network, torch.rand(batch_size, *shape), args.rounds)
      print(f"| {name} | {batch_size} | {1e3 * seconds:.1f} |", flush=True)


if __name__ == "__main__":
  main()
