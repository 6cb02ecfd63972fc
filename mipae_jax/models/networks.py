"""The main network of one experiment: content_encoder, pose_encoder, decoder
and the critic of its method, chosen by `config.model` and `config.method`."""

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from mipae_jax.models import critics, dcgan, resnet, vgg

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class Networks:
  """Module definitions (no parameters) of one experiment's main network."""

  content_encoder: nn.Module
  pose_encoder: nn.Module
  decoder: nn.Module
  critic: nn.Module
  skip_connections: bool
  # Frames per device in each call of a frozen encoder; 0: one call.
  inference_frames_per_call: int = 0


def build_networks(config: ml_collections.ConfigDict, channels: int) -> Networks:
  """Builds the modules for `config.method` and `config.model` (Sec. IV-A)."""
  model = config.model
  dtype: Any = DTYPES[model.dtype]
  if model.arch == "dcgan":
    content_encoder = dcgan.DCGANEncoder(
      model.content_dim, conv_impl=model.conv_impl, dtype=dtype
    )
    pose_encoder = dcgan.DCGANEncoder(
      model.pose_dim, conv_impl=model.conv_impl, dtype=dtype
    )
    decoder = dcgan.DCGANDecoder(
      channels,
      skip_connections=model.skip_connections,
      conv_impl=model.conv_impl,
      dtype=dtype,
    )
  elif model.arch == "vgg_resnet":
    content_encoder = vgg.VGGContentEncoder(model.content_dim, dtype=dtype)
    pose_encoder = resnet.ResNetPoseEncoder(model.pose_dim, dtype=dtype)
    decoder = vgg.VGGDecoder(
      channels, skip_connections=model.skip_connections, dtype=dtype
    )
  else:
    raise ValueError(f"config.model.arch={model.arch!r}; expected dcgan or vgg_resnet.")
  if config.method == "mipae":
    critic = critics.mi_critic(model.critic_hidden)
  else:
    critic = critics.scene_discriminator(model.scene_discriminator_hidden)
  return Networks(
    content_encoder,
    pose_encoder,
    decoder,
    critic,
    model.skip_connections,
    model.inference_frames_per_call,
  )
