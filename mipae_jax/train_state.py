"""The trained state of both stages and how it is initialised: the main
network's TrainState (E_c, E_p, D and the critic, two Adam states) and the
pose LSTM's LSTMState. Shared by training, restoring and evaluation."""

import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from mipae_jax import sharding
from mipae_jax.models.main_network import MainNetwork
from mipae_jax.models.networks import DTYPES, Networks
from mipae_jax.models.pose_lstm import PoseLSTM

Variables = dict[str, Any]


class TrainState(flax.struct.PyTreeNode):
  """Parameters of all four networks, BatchNorm statistics, two Adam states.

  As in the reference, E_c, E_p and D share one Adam state ("main") and the
  critic has its own ("critic"); both use `tx` (Sec. IV-A settings). The two
  are updated at different moments of a step (critic first), so they cannot
  be one optimiser over all parameters.
  """

  step: jax.Array
  params: Variables
  batch_stats: Variables
  opt_state: dict[str, optax.OptState]
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)


def create_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Adam, lr 0.002, b1 0.5 (Sec. IV-A)."""
  return optax.adam(config.learning_rate, b1=config.adam_b1, b2=config.adam_b2)


def split_params(params: Variables) -> tuple[Variables, Variables]:
  """(E_c, E_p, D parameters, critic parameters)."""
  main = {name: value for name, value in params.items() if name != "critic"}
  return main, params["critic"]


def init_opt_state(
  tx: optax.GradientTransformation, params: Variables
) -> dict[str, optax.OptState]:
  """One state of `tx` for the main network and one for the critic."""
  main, critic = split_params(params)
  return {"main": tx.init(main), "critic": tx.init(critic)}


def init_variables(
  networks: Networks, rng: jax.Array, image_shape: tuple[int, int, int], pose_dim: int
) -> tuple[Variables, Variables]:
  """Initial (params, batch_stats) for [H, W, C] frames: one subtree per
  network of the MainNetwork ("content_encoder", "pose_encoder", "decoder")
  and the critic's params ("critic")."""
  main_rng, critic_rng = jax.random.split(rng)
  frames = jnp.zeros((2, *image_shape), jnp.float32)
  main = networks.main.init(main_rng, frames, method=MainNetwork.initialize)
  pose_code = jnp.zeros((2, pose_dim), jnp.float32)
  critic = networks.critic.init(critic_rng, pose_code, pose_code)
  return {**main["params"], "critic": critic["params"]}, dict(main["batch_stats"])


def create_train_state(
  networks: Networks,
  config: ml_collections.ConfigDict,
  rng: jax.Array,
  image_shape: tuple[int, int, int],
) -> TrainState:
  """A fresh TrainState (call under jit with out_shardings to place it)."""
  params, batch_stats = init_variables(
    networks, rng, image_shape, config.model.pose_dim
  )
  tx = create_optimizer(config)
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    batch_stats=batch_stats,
    opt_state=init_opt_state(tx, params),
    tx=tx,
  )


def abstract_state(
  networks: Networks,
  config: ml_collections.ConfigDict,
  mesh: jax.sharding.Mesh,
  image_shape: tuple[int, int, int],
) -> Any:
  """The state's shapes, replicated over `mesh`: what a restore needs, with
  nothing compiled."""
  init_fn = functools.partial(
    create_train_state, networks, config, image_shape=image_shape
  )
  replicated = sharding.replicated(mesh)
  return jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
    jax.eval_shape(init_fn, jax.random.PRNGKey(0)),
  )


def init_state(
  networks: Networks,
  config: ml_collections.ConfigDict,
  mesh: jax.sharding.Mesh,
  image_shape: tuple[int, int, int],
) -> tuple[TrainState, Any]:
  """Initialises the state straight into its (replicated) shardings."""
  init_fn = functools.partial(
    create_train_state, networks, config, image_shape=image_shape
  )
  abstract = jax.eval_shape(init_fn, jax.random.PRNGKey(0))
  state_sharding = jax.tree.map(lambda _: sharding.replicated(mesh), abstract)
  rng = jax.random.PRNGKey(config.seed)
  state = jax.jit(init_fn, out_shardings=state_sharding)(rng)
  return state, state_sharding


class LSTMState(flax.struct.PyTreeNode):
  step: jax.Array
  params: Variables
  opt_state: optax.OptState
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)


def build_pose_lstm(config: ml_collections.ConfigDict) -> PoseLSTM:
  """L of Sec. IV-A from `config.lstm` and |z_p|."""
  return PoseLSTM(
    pose_dim=config.model.pose_dim,
    hidden_size=config.lstm.hidden_size,
    num_layers=config.lstm.num_layers,
    dtype=DTYPES[config.model.dtype],
  )


def create_lstm_state(
  pose_lstm: PoseLSTM, config: ml_collections.ConfigDict, rng: jax.Array
) -> LSTMState:
  content = jnp.zeros((1, config.model.content_dim), jnp.float32)
  poses = jnp.zeros((1, 2, config.model.pose_dim), jnp.float32)
  params = pose_lstm.init(rng, content, poses, np.array([True, False]))["params"]
  tx = optax.adam(config.lstm.learning_rate, b1=config.lstm.adam_b1)
  return LSTMState(
    step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), tx=tx
  )
