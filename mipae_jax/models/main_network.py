"""The main network of Sec. III as one Flax module: the content encoder E_c,
the pose encoder E_p and the decoder D, with a method for each."""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Skips = Sequence[jax.Array] | None


class MainNetwork(nn.Module):
  """E_c, E_p and D of one experiment (the critic is trained apart).

  Its variables hold one subtree per network ("content_encoder",
  "pose_encoder", "decoder"). `__call__` is the training forward pass of
  eq. 1, 3 and 4; `encode_content`, `encode_pose` and `decode` serve
  inference and the critic's phase through `apply(..., method=...)`.
  """

  content_encoder: nn.Module
  pose_encoder: nn.Module
  decoder: nn.Module
  skip_connections: bool

  def encode_content(
    self, frames: jax.Array, train: bool = False
  ) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    """E_c(x): (z_c [N, |z_c|], the skip activations)."""
    return self.content_encoder(frames, train=train)

  def encode_pose(self, frames: jax.Array, train: bool = False) -> jax.Array:
    """E_p(x): z_p [N, |z_p|]."""
    return self.pose_encoder(frames, train=train)

  def decode(
    self, content: jax.Array, pose: jax.Array, skips: Skips, train: bool = False
  ) -> jax.Array:
    """D(z_c, z_p) in [0, 1]; `skips` are E_c's (ignored without skip
    connections)."""
    return self.decoder(
      content, pose, skips if self.skip_connections else None, train=train
    )

  def __call__(
    self,
    frames_0: jax.Array,
    frames_k: jax.Array,
    recon_frames: jax.Array,
    frames_j: jax.Array,
    train: bool = True,
  ) -> dict[str, jax.Array]:
    """One training pass, in the reference's order of BatchNorm updates:
    E_c(x^0), E_c(x^k), E_p(recon_frames), E_p(x^j), then D(z_c^0, z_p)."""
    content_0, skips = self.encode_content(frames_0, train)
    content_k, _ = self.encode_content(frames_k, train)
    pose = self.encode_pose(recon_frames, train)
    pose_other = self.encode_pose(frames_j, train)
    return dict(
      content_0=content_0,
      content_k=content_k,
      pose=pose,
      pose_other=pose_other,
      decoded=self.decode(content_0, pose, skips, train),
    )

  def initialize(self, frames: jax.Array) -> jax.Array:
    """Every network once (for `init(..., method=MainNetwork.initialize)`)."""
    content, skips = self.encode_content(frames)
    pose = self.encode_pose(frames)
    return self.decode(content, jnp.zeros_like(pose), skips)
