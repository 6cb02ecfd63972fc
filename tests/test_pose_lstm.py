"""Tests of the scanned pose LSTM (eq. 7) in mipae_jax/models/pose_lstm.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mipae_jax.models.pose_lstm import PoseLSTM, PoseLSTMCell

BATCH = 3
CONTENT_DIM = 7
POSE_DIM = 5
HIDDEN = 16
NUM_CONTEXT = 4


def _small_model() -> PoseLSTM:
  return PoseLSTM(POSE_DIM, hidden_size=HIDDEN, num_layers=2)


def _inputs(horizon: int, seed: int = 0):
  keys = jax.random.split(jax.random.key(seed), 2)
  content = jax.random.normal(keys[0], (BATCH, CONTENT_DIM))
  teacher = jnp.tanh(
    jax.random.normal(keys[1], (BATCH, NUM_CONTEXT + horizon, POSE_DIM))
  )
  return content, teacher[:, :NUM_CONTEXT], teacher


@pytest.fixture(scope="module")
def variables():
  """Parameters of `_small_model()`, shared by the tests (init is slow)."""
  content, context, _ = _inputs(6)
  return _small_model().init(jax.random.key(1), content, context, 6, method="rollout")


def _python_step_rollout(params, content, teacher, horizon, teacher_forcing):
  """Eq. 7 one frame at a time: a Python loop over calls of the cell."""
  cell = PoseLSTMCell(POSE_DIM, hidden_size=HIDDEN, num_layers=2)
  step_cell = jax.jit(cell.apply)
  carry = cell.initial_carry(BATCH)
  use_given = jnp.ones((BATCH,), bool)
  previous_prediction = None
  predictions = []
  for step in range(NUM_CONTEXT + horizon - 1):
    if teacher_forcing or step < NUM_CONTEXT:
      input_pose = teacher[:, step]
    else:
      input_pose = previous_prediction
    carry, previous_prediction = step_cell(
      {"params": params["cell"]}, carry, (input_pose, use_given), content
    )
    predictions.append(previous_prediction)
  return jnp.stack(predictions, axis=1)


@pytest.mark.parametrize("teacher_forcing", [False, True])
def test_scanned_rollout_equals_python_step_loop(teacher_forcing, variables):
  horizon = 6
  model = _small_model()
  content, context, teacher = _inputs(horizon, seed=2)
  scanned = model.apply(
    variables,
    content,
    context,
    horizon,
    teacher_poses=teacher,
    teacher_forcing=teacher_forcing,
    method="rollout",
  )
  stepped = _python_step_rollout(
    variables["params"], content, teacher, horizon, teacher_forcing
  )
  np.testing.assert_allclose(scanned["all"], stepped, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(
    scanned["future"], stepped[:, NUM_CONTEXT - 1 :], rtol=1e-5, atol=1e-6
  )


def test_eq7_and_teacher_forcing_agree_on_context_and_differ_after(variables):
  horizon = 6
  model = _small_model()
  content, context, teacher = _inputs(horizon, seed=3)
  own = model.apply(
    variables, content, context, horizon, teacher_poses=teacher, method="rollout"
  )
  forced = model.apply(
    variables,
    content,
    context,
    horizon,
    teacher_poses=teacher,
    teacher_forcing=True,
    method="rollout",
  )
  # Outputs 0..C-1 read only context poses; the first future prediction too.
  np.testing.assert_allclose(
    own["all"][:, :NUM_CONTEXT], forced["all"][:, :NUM_CONTEXT]
  )
  assert np.abs(own["future"][:, 1:] - forced["future"][:, 1:]).min() > 0


def test_per_example_mask_mixes_schemes_within_a_batch(variables):
  horizon = 5
  model = _small_model()
  content, context, teacher = _inputs(horizon, seed=4)
  own = model.apply(variables, content, context, horizon, method="rollout")
  forced = model.apply(
    variables,
    content,
    context,
    horizon,
    teacher_poses=teacher,
    teacher_forcing=True,
    method="rollout",
  )
  num_steps = NUM_CONTEXT + horizon - 1
  observed = np.zeros((BATCH, num_steps), bool)
  observed[:, :NUM_CONTEXT] = True
  observed[1] = True  # Example 1 is teacher-forced, the others follow eq. 7.
  mixed = model.apply(variables, content, teacher[:, :num_steps], observed)
  np.testing.assert_allclose(mixed[1], forced["all"][1], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(mixed[0], own["all"][0], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(mixed[2], own["all"][2], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("horizon", [1, 10, 30])
def test_rollout_shapes_and_range_for_any_horizon(horizon, variables):
  model = _small_model()
  content, context, _ = _inputs(horizon, seed=5)
  # Large inputs drive the output pre-activations far into tanh's tails.
  out = model.apply(
    variables, 100.0 * content, 100.0 * context, horizon, method="rollout"
  )
  assert out["all"].shape == (BATCH, NUM_CONTEXT + horizon - 1, POSE_DIM)
  assert out["future"].shape == (BATCH, horizon, POSE_DIM)
  assert out["all"].dtype == jnp.float32
  assert np.all(np.abs(out["all"]) <= 1.0)
  np.testing.assert_array_equal(out["future"], out["all"][:, NUM_CONTEXT - 1 :])


def test_rollout_is_one_scan_over_all_steps(variables):
  horizon = 30
  model = _small_model()
  content, context, _ = _inputs(horizon)
  jaxpr = jax.make_jaxpr(
    lambda v, c, p: model.apply(v, c, p, horizon, method="rollout")
  )(variables, content, context).jaxpr
  scans = [eqn for eqn in jaxpr.eqns if eqn.primitive.name == "scan"]
  assert len(scans) == 1
  assert scans[0].params["length"] == NUM_CONTEXT + horizon - 1


def test_parameter_count_matches_hand_derived_count():
  content_dim, pose_dim, hidden = 128, 5, 256
  model = PoseLSTM(pose_dim)
  content = jnp.zeros((2, content_dim))
  context = jnp.zeros((2, 5, pose_dim))
  variables = jax.eval_shape(
    lambda: model.init(jax.random.key(0), content, context, 10, method="rollout")
  )
  count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables))
  embedding = (content_dim + pose_dim) * hidden + hidden  # 34_304
  # Per layer: 4 gates x (input kernel + recurrent kernel + one bias).
  lstm_layer = 4 * (hidden * hidden + hidden * hidden + hidden)  # 525_312
  output = hidden * pose_dim + pose_dim  # 1_285
  assert count == embedding + 2 * lstm_layer + output == 1_086_213


def test_jitted_rollout_traces_once_for_repeated_shapes(variables):
  horizon = 8
  model = _small_model()
  num_traces = 0

  @jax.jit
  def predict(variables, content, context):
    nonlocal num_traces
    num_traces += 1
    return model.apply(variables, content, context, horizon, method="rollout")

  for seed in range(3):
    content, context, _ = _inputs(horizon, seed=seed)
    predict(variables, content, context)["future"].block_until_ready()
  assert num_traces == 1


def test_bfloat16_matmuls_keep_float32_outputs_close_to_float32_model(variables):
  horizon = 10
  content, context, _ = _inputs(horizon, seed=6)
  full = _small_model().apply(variables, content, context, horizon, method="rollout")
  half = PoseLSTM(POSE_DIM, HIDDEN, 2, dtype=jnp.bfloat16).apply(
    variables, content, context, horizon, method="rollout"
  )
  assert half["future"].dtype == jnp.float32
  np.testing.assert_allclose(half["future"], full["future"], atol=0.05)


def _bad_rollout_cases():
  content, context, teacher = _inputs(6)
  return {
    "horizon_zero": (dict(horizon=0), "horizon must be >= 1"),
    "horizon_negative": (dict(horizon=-3), "horizon must be >= 1"),
    "horizon_not_int": (dict(horizon=2.0), "horizon must be a Python int"),
    "empty_context": (dict(context_poses=context[:, :0]), "at least one frame"),
    "context_rank": (dict(context_poses=context[0]), r"context_poses must be \[B, C"),
    "content_batch": (dict(content=content[:2]), "content has batch 2"),
    "content_rank": (dict(content=content[:, None]), r"content must be \[B"),
    "context_pose_dim": (dict(context_poses=context[..., :3]), "pose_dim = 5"),
    "teacher_missing": (dict(teacher_forcing=True), "needs teacher_poses"),
    "teacher_length": (
      dict(teacher_poses=teacher[:, :-1], teacher_forcing=True),
      r"C \+ horizon",
    ),
    "teacher_batch": (dict(teacher_poses=teacher[:2]), r"C \+ horizon"),
  }


@pytest.mark.parametrize("case", sorted(_bad_rollout_cases()))
def test_bad_rollout_input_raises_value_error_while_tracing(case, variables):
  model = _small_model()
  content, context, _ = _inputs(6)
  overrides, message = _bad_rollout_cases()[case]
  arrays = dict(content=content, context_poses=context)
  static = dict(horizon=6)
  for name, value in overrides.items():
    (arrays if isinstance(value, jax.Array) else static)[name] = value
  # Arrays are traced, so the error must come from shape checks at trace time.
  predict = jax.jit(lambda v, a: model.apply(v, method="rollout", **a, **static))
  with pytest.raises(ValueError, match=message):
    predict(variables, arrays)


@pytest.mark.parametrize(
  "observed, message",
  [
    (np.ones((5,), bool), r"observed must be \[S\] = \[4\]"),
    (np.ones((BATCH, 4, 1), bool), r"observed must be \[S\] = \[4\]"),
    (np.ones((4,), np.int32), "observed must be bool"),
  ],
)
def test_bad_observed_mask_raises_value_error(observed, message, variables):
  model = _small_model()
  content, _, teacher = _inputs(6)
  with pytest.raises(ValueError, match=message):
    model.apply(variables, content, teacher[:, :4], observed)
