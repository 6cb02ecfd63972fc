"""The pose LSTM L of MIPAE's second training stage (paper Sec. III, eq. 7).

Eq. 7 predicts the next pose from the content of the last context frame and
the previous frame's pose:

  z^_p^t = L(z_c^C, z~_p^{t-1}),  z~_p^{t-1} = E_p(x^{t-1}) if t-1 <= C,
                                               z^_p^{t-1}  otherwise,

and stage 2 minimises the l2 loss between z^_p^{2:C+T} and E_p's poses of the
ground-truth frames. The whole rollout is one `nn.scan` over time: each step
reads a given pose and a boolean saying whether to use it (teacher forcing) or
its own previous prediction, so one compiled function serves eq. 7, teacher
forcing on every frame, and prediction past the end of the given poses.

Which scheme trains L: eq. 7 as printed feeds E_p's poses for the C context
frames and L's own predictions after them; this is the default
(`config.lstm.teacher_forcing = False`). The authors' reference
implementation trains instead with teacher forcing on all frames (its stage-2
step feeds E_p(x^{t-1}) at every t in 2..C+T) and uses eq. 7's scheme only at
test time; `config.lstm.teacher_forcing = True` selects that.

Architecture (Sec. IV-A): linear embedding of concat(z_c^C, z~_p^{t-1}) to
256, two stacked LSTM layers of 256 cells, linear output to |z_p| and tanh
(the pose encoder's range). The embedding and output layers start as in the
reference (kernels N(0, 0.02), zero biases); the LSTM cells keep Flax's
defaults, as the reference keeps PyTorch's for its cells.
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

LSTMState = tuple[jnp.ndarray, jnp.ndarray]
# (per-layer (memory c, hidden h), previous predicted pose [B, |z_p|]).
PoseLSTMCarry = tuple[tuple[LSTMState, ...], jnp.ndarray]

_DENSE_KERNEL_INIT = nn.initializers.normal(stddev=0.02)


class PoseLSTMCell(nn.Module):
  """One step of L (eq. 7), choosing its input pose by a boolean per example.

  Uses `nn.OptimizedLSTMCell`: the same equations and parameters as
  `nn.LSTMCell`, with the four gates' kernels concatenated into one matmul for
  the input and one for the recurrent state, which is faster at 256 cells.
  Matmuls run in `dtype`; the LSTM memory, hidden states and predicted poses
  are kept in float32 so bfloat16 activations do not accumulate error over
  long horizons.
  """

  pose_dim: int
  hidden_size: int = 256
  num_layers: int = 2
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(
    self,
    carry: PoseLSTMCarry,
    step_inputs: tuple[jnp.ndarray, jnp.ndarray],
    content: jnp.ndarray,
  ) -> tuple[PoseLSTMCarry, jnp.ndarray]:
    """Predicts z^_p^t from z_c^C and z~_p^{t-1}.

    Args:
      carry: the LSTM states and the previous step's predicted pose.
      step_inputs: (given pose [B, |z_p|], use_given [B] bool). Where
        use_given is False the step reads the previous prediction in `carry`.
      content: z_c^C, [B, |z_c|], the same at every step.

    Returns:
      The new carry and the predicted pose [B, |z_p|] (float32, in [-1, 1]).
    """
    lstm_states, previous_prediction = carry
    given_pose, use_given = step_inputs
    input_pose = jnp.where(use_given[:, None], given_pose, previous_prediction)
    features = nn.Dense(
      self.hidden_size,
      dtype=self.dtype,
      kernel_init=_DENSE_KERNEL_INIT,
      name="embed",
    )(jnp.concatenate([content, input_pose.astype(content.dtype)], axis=-1))
    new_states = []
    for layer in range(self.num_layers):
      state, features = nn.OptimizedLSTMCell(
        self.hidden_size, dtype=self.dtype, name=f"lstm_{layer}"
      )(lstm_states[layer], features)
      new_states.append(state)
    prediction = jnp.tanh(
      nn.Dense(
        self.pose_dim,
        dtype=self.dtype,
        kernel_init=_DENSE_KERNEL_INIT,
        name="output",
      )(features)
    ).astype(jnp.float32)
    return (tuple(new_states), prediction), prediction

  @nn.nowrap
  def initial_carry(self, batch_size: int) -> PoseLSTMCarry:
    """Zero LSTM states and a zero previous prediction, all float32."""
    zeros = jnp.zeros((batch_size, self.hidden_size), jnp.float32)
    states = tuple((zeros, zeros) for _ in range(self.num_layers))
    return states, jnp.zeros((batch_size, self.pose_dim), jnp.float32)


class PoseLSTM(nn.Module):
  """L of eq. 7 rolled over time by one `nn.scan` (parameters `cell/...`).

  `__call__` runs any mix of given and own poses; `rollout` builds the mix for
  C context poses and a horizon of any length (see the module docstring for
  which scheme the paper and the reference train with).
  """

  pose_dim: int
  hidden_size: int = 256
  num_layers: int = 2
  dtype: Any = jnp.float32

  def setup(self):
    scanned_cell = nn.scan(
      PoseLSTMCell,
      variable_broadcast="params",
      split_rngs={"params": False},
      in_axes=(1, nn.broadcast),
      out_axes=1,
    )
    self.cell = scanned_cell(
      self.pose_dim, self.hidden_size, self.num_layers, self.dtype
    )

  def __call__(
    self,
    content: jnp.ndarray,
    poses: jnp.ndarray,
    observed: jnp.ndarray | np.ndarray | Sequence[bool],
  ) -> jnp.ndarray:
    """Runs L over S steps from a zero state (eq. 7 with a free input choice).

    With 0-based frame indices, step s reads poses[:, s] where observed[s]
    (or observed[b, s]) is True and otherwise L's own output of step s - 1
    (the zero pose at s = 0), and outputs its prediction of pose s + 1. In
    the paper's 1-based notation output s is z^_p^{s+2}, made from
    z~_p^{s+1}; outputs 0..S-1 are z^_p^{2:S+1}.

    Args:
      content: z_c^C, [B, |z_c|], held fixed over all steps.
      poses: [B, S, |z_p|] given poses; entries where observed is False are
        never read.
      observed: [S] or [B, S] bool, True where step s reads poses[:, s].

    Returns:
      Predicted poses [B, S, |z_p|], float32, in [-1, 1].

    Raises:
      ValueError: on inputs of the wrong rank, batch, pose size or dtype.
    """
    if content.ndim != 2:
      raise ValueError(f"content must be [B, |z_c|], got shape {content.shape}.")
    if poses.ndim != 3:
      raise ValueError(f"poses must be [B, S, |z_p|], got shape {poses.shape}.")
    batch_size, num_steps, pose_dim = poses.shape
    if content.shape[0] != batch_size:
      raise ValueError(
        f"content has batch {content.shape[0]} but poses have batch {batch_size}."
      )
    if pose_dim != self.pose_dim:
      raise ValueError(
        f"poses have |z_p| = {pose_dim} but the LSTM predicts "
        f"pose_dim = {self.pose_dim}."
      )
    if num_steps < 1:
      raise ValueError("poses must hold at least one step (S >= 1).")
    observed = jnp.asarray(observed)
    if observed.dtype != jnp.bool_:
      raise ValueError(f"observed must be bool, got {observed.dtype}.")
    if observed.shape not in ((num_steps,), (batch_size, num_steps)):
      raise ValueError(
        f"observed must be [S] = [{num_steps}] or [B, S] = "
        f"[{batch_size}, {num_steps}], got shape {observed.shape}."
      )
    observed = jnp.broadcast_to(observed, (batch_size, num_steps))
    carry = self.cell.initial_carry(batch_size)
    _, predictions = self.cell(carry, (poses, observed), content)
    return predictions

  def rollout(
    self,
    content: jnp.ndarray,
    context_poses: jnp.ndarray,
    horizon: int,
    teacher_poses: jnp.ndarray | None = None,
    teacher_forcing: bool = False,
  ) -> dict[str, jnp.ndarray]:
    """Predicts z^_p^{2:C+horizon} from C context poses (eq. 7).

    Inputs are z~_p^{1:C+horizon-1}: the C context poses, then either L's own
    predictions (eq. 7) or, with teacher_forcing, teacher_poses[:, C:-1].
    Any horizon >= 1 works, longer than in training included; each distinct
    (C, horizon, teacher_forcing) compiles once under jit (all static).

    Args:
      content: z_c^C, [B, |z_c|], content of the last context frame x^C.
      context_poses: E_p(x^{1:C}), [B, C, |z_p|].
      horizon: number T of future poses to predict, a Python int >= 1.
      teacher_poses: E_p(x^{1:C+horizon}), [B, C + horizon, |z_p|]; read only
        with teacher_forcing (its first C entries are not read: the context
        comes from context_poses; its last entry is only ever a target).
      teacher_forcing: feed teacher_poses instead of L's own predictions
        after the context (`config.lstm.teacher_forcing`).

    Returns:
      {"all": z^_p^{2:C+horizon} [B, C + horizon - 1, |z_p|],
       "future": z^_p^{C+1:C+horizon} [B, horizon, |z_p|]}, float32.

    Raises:
      ValueError: on a horizon < 1, an empty context, or mismatched batch or
        pose sizes, raised while tracing, before anything compiles.
    """
    if isinstance(horizon, bool) or not isinstance(horizon, int | np.integer):
      raise ValueError(f"horizon must be a Python int, got {horizon!r}.")
    if horizon < 1:
      raise ValueError(f"horizon must be >= 1, got {horizon}.")
    if context_poses.ndim != 3:
      raise ValueError(
        f"context_poses must be [B, C, |z_p|], got shape {context_poses.shape}."
      )
    batch_size, num_context, pose_dim = context_poses.shape
    if num_context < 1:
      raise ValueError("context_poses must hold at least one frame (C >= 1).")
    if teacher_forcing and teacher_poses is None:
      raise ValueError("teacher_forcing=True needs teacher_poses.")
    expected = (batch_size, num_context + horizon, pose_dim)
    if teacher_poses is not None and teacher_poses.shape != expected:
      raise ValueError(
        f"teacher_poses must be [B, C + horizon, |z_p|] = {list(expected)}, "
        f"got shape {teacher_poses.shape}."
      )
    if teacher_forcing:
      future_inputs = teacher_poses[:, num_context:-1]
    else:
      future_inputs = jnp.zeros(
        (batch_size, horizon - 1, pose_dim), context_poses.dtype
      )
    poses = jnp.concatenate(
      [context_poses, future_inputs.astype(context_poses.dtype)], axis=1
    )
    observed = np.arange(num_context + horizon - 1) < num_context
    observed |= bool(teacher_forcing)
    predictions = self(content, poses, observed)
    return {"all": predictions, "future": predictions[:, num_context - 1 :]}
