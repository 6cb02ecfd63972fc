"""XLA compiler options of the jitted training steps.

`config.cpu_compiler_options` holds XLA debug options (`jax.jit`'s
`compiler_options`) that the training steps are compiled with when the
backend is the CPU; on GPU / TPU the steps get XLA's defaults.
"""

from typing import Any

import jax
import ml_collections


def compiler_options(config: ml_collections.ConfigDict) -> dict[str, Any] | None:
  """`jax.jit(..., compiler_options=...)` for a training step of `config`.

  Raises ValueError naming the option when XLA refuses one (an unknown name
  or a value of the wrong type), before any step is compiled.
  """
  options = config.get("cpu_compiler_options")
  if not options or jax.default_backend() != "cpu":
    return None
  options = dict(options)
  try:
    jax.jit(lambda: 0, compiler_options=options).lower().compile()
  except jax.errors.JaxRuntimeError as error:
    raise ValueError(
      f"Bad config: config.cpu_compiler_options={options} is refused by XLA: {error}"
    ) from None
  return options
