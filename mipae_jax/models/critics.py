"""Critics on pairs of pose codes: MIPAE's `mi_critic` and DRNET's
`scene_discriminator`. Both map (z_p^t, z_p^{t+k}) to one logit per pair."""

import flax.linen as nn
import jax.numpy as jnp

from mipae_jax.models import initializers


class PairMLP(nn.Module):
  """MLP on concat(z_a, z_b): two ReLU hidden layers, one logit per pair.

  Kernels N(0, 0.02), biases 0: the reference's `init_weights` on its
  `scene_discriminator`, which serves both methods.
  """

  hidden_size: int

  @nn.compact
  def __call__(self, pose_a: jnp.ndarray, pose_b: jnp.ndarray) -> jnp.ndarray:
    h = jnp.concatenate([pose_a, pose_b], axis=-1).astype(jnp.float32)
    h = nn.relu(
      nn.Dense(self.hidden_size, kernel_init=initializers.weight_init, name="hidden1")(
        h
      )
    )
    h = nn.relu(
      nn.Dense(self.hidden_size, kernel_init=initializers.weight_init, name="hidden2")(
        h
      )
    )
    return nn.Dense(1, kernel_init=initializers.weight_init, name="logit")(h)[..., 0]


def mi_critic(hidden_size: int = 512) -> PairMLP:
  """The critic C of eq. 2, 3 and 6 (two hidden layers of 512, Sec. IV-A)."""
  return PairMLP(hidden_size, name="mi_critic")


def scene_discriminator(hidden_size: int = 512) -> PairMLP:
  """DRNET's scene discriminator: the same MLP, 512 wide, as in the MIPAE
  reference's DRNET runs (`scene_discriminator(pose_dim, nf=512)`)."""
  return PairMLP(hidden_size, name="scene_discriminator")
