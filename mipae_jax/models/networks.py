"""The networks of one experiment: the MainNetwork (content encoder, pose
encoder, decoder) and the critic of its method, chosen by `config.model` and
`config.method`."""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from mipae_jax.models import critics, dcgan, resnet, vgg
from mipae_jax.models.main_network import MainNetwork

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# Frames per device in each call of a frozen encoder that
# inference_frames_per_call="auto" means on the CPU backend: cache-sized calls.
CPU_INFERENCE_FRAMES_PER_CALL = 16


@dataclasses.dataclass(frozen=True)
class Networks:
  """Module definitions (no parameters) of one experiment."""

  main: MainNetwork
  critic: nn.Module
  # Frames per device in each call of a frozen encoder; 0: one call.
  inference_frames_per_call: int = 0


def resolve_inference_frames_per_call(value: int | str) -> int:
  """config.model.inference_frames_per_call as an int: "auto" is
  `CPU_INFERENCE_FRAMES_PER_CALL` on the CPU backend, else 0 (one call)."""
  if value == "auto":
    return CPU_INFERENCE_FRAMES_PER_CALL if jax.default_backend() == "cpu" else 0
  return value


def build_networks(config: ml_collections.ConfigDict, channels: int) -> Networks:
  """Builds the modules for `config.method` and `config.model` (Sec. IV-A)."""
  model = config.model
  dtype: Any = DTYPES[model.dtype]
  if model.arch == "dcgan":
    content_encoder = dcgan.DCGANEncoder(
      model.content_dim, conv_impl=model.conv_impl, dtype=dtype
    )
    pose_encoder = dcgan.DCGANEncoder(
      model.pose_dim, conv_impl=model.conv_impl, dtype=dtype, return_skips=False
    )
    decoder = dcgan.DCGANDecoder(
      channels,
      skip_connections=model.skip_connections,
      conv_impl=model.conv_impl,
      dtype=dtype,
    )
  elif model.arch == "vgg_resnet":
    content_encoder = vgg.VGGContentEncoder(
      model.content_dim, conv_impl=model.conv_impl, dtype=dtype
    )
    pose_encoder = resnet.ResNetPoseEncoder(
      model.pose_dim, conv_impl=model.conv_impl, dtype=dtype
    )
    decoder = vgg.VGGDecoder(
      channels,
      skip_connections=model.skip_connections,
      conv_impl=model.conv_impl,
      dtype=dtype,
    )
  else:
    raise ValueError(f"config.model.arch={model.arch!r}; expected dcgan or vgg_resnet.")
  if config.method == "mipae":
    critic = critics.mi_critic(model.critic_hidden)
  else:
    critic = critics.scene_discriminator(model.scene_discriminator_hidden)
  return Networks(
    MainNetwork(content_encoder, pose_encoder, decoder, model.skip_connections),
    critic,
    resolve_inference_frames_per_call(model.inference_frames_per_call),
  )
