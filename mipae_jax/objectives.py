"""The losses of the paper (eq. 1-6) and of DRNET, as pure functions of arrays.

Squared errors are averaged over elements, as the reference implementation's
`nn.MSELoss` does; the paper's eq. 1 and 4 write the (summed) squared norm,
which differs by a constant factor only.
"""

import jax
import jax.numpy as jnp
import optax


def similarity_loss(content_t: jnp.ndarray, content_tk: jnp.ndarray) -> jnp.ndarray:
  """Eq. 1, L_sim: ||E_c(x^t) - E_c(x^{t+k})||^2, gradient only through x^t.

  The reference detaches the second code; so do we.
  """
  return jnp.mean(jnp.square(content_t - jax.lax.stop_gradient(content_tk)))


def reconstruction_loss(decoded: jnp.ndarray, target: jnp.ndarray) -> jnp.ndarray:
  """Eq. 4, L_recon: pixel-wise squared error of the decoded frame."""
  return jnp.mean(jnp.square(decoded.astype(jnp.float32) - target))


def critic_loss(joint_logits: jnp.ndarray, marginal_logits: jnp.ndarray) -> jnp.ndarray:
  """Eq. 2 / 6 in the GAN (Jensen-Shannon) form, negated to be minimised.

  The critic maximises E_joint[log sigma(C)] + E_marginal[log(1 - sigma(C))]
  = -softplus(-C(joint)) - softplus(C(marginal)).
  """
  return jnp.mean(jax.nn.softplus(-joint_logits)) + jnp.mean(
    jax.nn.softplus(marginal_logits)
  )


def mutual_information_bound(
  joint_logits: jnp.ndarray, marginal_logits: jnp.ndarray
) -> jnp.ndarray:
  """Eq. 3, I_JS (Poole et al. 2019): the NWJ bound evaluated at C + 1.

  E_joint[C] - E_marginal[exp(C)] + 1. This is L_MI, minimised by the pose
  encoder; at the critic's optimum C* = log p(z, z') / p(z)p(z') it equals the
  mutual information between z_p^t and z_p^{t+k}.
  """
  return jnp.mean(joint_logits) - jnp.mean(jnp.exp(marginal_logits)) + 1.0


def mipae_loss(
  recon: jnp.ndarray,
  sim: jnp.ndarray,
  mi: jnp.ndarray,
  sim_weight: float,
  mi_weight: float,
) -> jnp.ndarray:
  """Eq. 5: L_recon + alpha L_sim + beta L_MI."""
  return recon + sim_weight * sim + mi_weight * mi


def drnet_loss(
  recon: jnp.ndarray,
  sim: jnp.ndarray,
  adversarial: jnp.ndarray,
  sim_weight: float,
  adversarial_weight: float,
) -> jnp.ndarray:
  """DRNET's main-network loss: L_recon + alpha L_sim + w L_adversarial."""
  return recon + sim_weight * sim + adversarial_weight * adversarial


def scene_discriminator_loss(
  joint_logits: jnp.ndarray, marginal_logits: jnp.ndarray
) -> jnp.ndarray:
  """DRNET: binary cross-entropy, same-video pairs 1, different-video pairs 0."""
  same = optax.sigmoid_binary_cross_entropy(joint_logits, jnp.ones_like(joint_logits))
  different = optax.sigmoid_binary_cross_entropy(
    marginal_logits, jnp.zeros_like(marginal_logits)
  )
  return 0.5 * (jnp.mean(same) + jnp.mean(different))


def adversarial_pose_loss(joint_logits: jnp.ndarray) -> jnp.ndarray:
  """DRNET's pose-encoder loss: cross-entropy of D's output against 0.5.

  Minimised when the discriminator cannot tell same-video pairs apart.
  """
  return jnp.mean(
    optax.sigmoid_binary_cross_entropy(joint_logits, jnp.full_like(joint_logits, 0.5))
  )


def derangement(rng: jax.Array, size: int) -> jnp.ndarray:
  """A random permutation of range(size) with no fixed point (size >= 2).

  Visits a random ordering of the batch as one cycle: video order[i] is paired
  with video order[i + 1], so every marginal pair mixes two different videos.
  """
  order = jax.random.permutation(rng, size)
  partner = jnp.roll(order, -1)
  return jnp.zeros((size,), jnp.int32).at[order].set(partner.astype(jnp.int32))
