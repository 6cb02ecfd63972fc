"""Each loss against a value computed by hand; the critic against analytic MI."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mipae_jax import objectives
from mipae_jax.models import critics


def test_similarity_loss_is_mean_squared_distance_with_gradient_through_first():
  a = jnp.array([[1.0, 2.0], [0.0, -1.0]])
  b = jnp.array([[0.0, 0.0], [1.0, 1.0]])
  # ((1 + 4) + (1 + 4)) / 4 elements
  np.testing.assert_allclose(objectives.similarity_loss(a, b), 2.5)
  grad_b = jax.grad(lambda y: objectives.similarity_loss(a, y))(b)
  np.testing.assert_array_equal(grad_b, 0.0)
  grad_a = jax.grad(lambda x: objectives.similarity_loss(x, b))(a)
  np.testing.assert_allclose(grad_a, 2 * (a - b) / 4)


def test_reconstruction_loss_is_pixel_mse():
  x = jnp.zeros((1, 2, 2, 1))
  y = jnp.array([0.0, 1.0, 0.5, 0.5]).reshape(1, 2, 2, 1)
  np.testing.assert_allclose(
    objectives.reconstruction_loss(x, y), (1 + 0.25 + 0.25) / 4
  )


def test_critic_loss_is_negated_gan_objective():
  joint = jnp.array([2.0, -1.0])
  marginal = jnp.array([0.5])
  expected = np.mean([np.log1p(np.exp(-2.0)), np.log1p(np.exp(1.0))]) + np.log1p(
    np.exp(0.5)
  )
  np.testing.assert_allclose(
    objectives.critic_loss(joint, marginal), expected, rtol=1e-6
  )


def test_mutual_information_bound_is_nwj_at_c_plus_one():
  joint = jnp.array([1.0, 3.0])
  marginal = jnp.array([0.0, np.log(2.0)])
  # E_joint[C] - E_marg[exp C] + 1 = 2 - 1.5 + 1
  np.testing.assert_allclose(
    objectives.mutual_information_bound(joint, marginal), 1.5, rtol=1e-6
  )


def test_mipae_total_is_eq5():
  np.testing.assert_allclose(objectives.mipae_loss(1.0, 2.0, 3.0, 0.5, 1e-4), 2.0003)


def test_drnet_losses_are_cross_entropies():
  joint = jnp.array([0.0, 2.0])
  marginal = jnp.array([-1.0])
  same = np.mean([np.log(2.0), np.log1p(np.exp(-2.0))])
  different = np.log1p(np.exp(-1.0))
  np.testing.assert_allclose(
    objectives.scene_discriminator_loss(joint, marginal),
    0.5 * (same + different),
    rtol=1e-6,
  )
  # CE against 0.5 is minimal (log 2) where the discriminator outputs 0.5.
  np.testing.assert_allclose(
    objectives.adversarial_pose_loss(jnp.zeros(3)), np.log(2.0), rtol=1e-6
  )
  assert objectives.adversarial_pose_loss(jnp.array([3.0])) > np.log(2.0)


def test_derangement_has_no_fixed_point_and_is_a_permutation():
  for seed in range(20):
    perm = np.asarray(objectives.derangement(jax.random.PRNGKey(seed), 7))
    assert sorted(perm.tolist()) == list(range(7))
    assert np.all(perm != np.arange(7))


def test_critic_estimate_approaches_analytic_mi_of_correlated_gaussians():
  """Trained alone on (x, y) with corr rho, I_JS approaches -0.5 d log(1-rho^2)."""
  rho, dim, batch = 0.8, 2, 512
  analytic = -0.5 * dim * np.log(1 - rho**2)
  critic = critics.mi_critic(128)
  params = critic.init(jax.random.PRNGKey(0), jnp.zeros((1, dim)), jnp.zeros((1, dim)))
  tx = optax.adam(1e-3)
  opt_state = tx.init(params)

  def sample(rng):
    kx, kn = jax.random.split(rng)
    x = jax.random.normal(kx, (batch, dim))
    y = rho * x + np.sqrt(1 - rho**2) * jax.random.normal(kn, (batch, dim))
    return x, y, jnp.roll(y, 1, axis=0)

  @jax.jit
  def step(params, opt_state, rng):
    x, y, y_marginal = sample(rng)

    def loss(p):
      return objectives.critic_loss(
        critic.apply(p, x, y), critic.apply(p, x, y_marginal)
      )

    grads = jax.grad(loss)(params)
    updates, opt_state = tx.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state

  rng = jax.random.PRNGKey(1)
  for _ in range(1500):
    rng, key = jax.random.split(rng)
    params, opt_state = step(params, opt_state, key)
  estimates = []
  for i in range(20):
    x, y, y_marginal = sample(jax.random.PRNGKey(1000 + i))
    estimates.append(
      objectives.mutual_information_bound(
        critic.apply(params, x, y), critic.apply(params, x, y_marginal)
      )
    )
  estimate = float(np.mean(estimates))
  assert abs(estimate - analytic) < 0.2 * analytic, (estimate, analytic)
