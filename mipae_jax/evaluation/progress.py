"""What the evaluation's long loops share: progress lines and gathering
sharded results to every host."""

import math
import time
from typing import Any

from absl import logging
from jax.experimental import multihost_utils

_PROGRESS_EVERY_S = 30.0


def gather(tree: Any) -> Any:
  """Global (possibly multi-host) arrays as whole NumPy arrays on every host."""
  return multihost_utils.process_allgather(tree, tiled=True)


class Progress:
  """Log lines with the work done, its rate and the ETA: after the first step
  (compilation included), then every 30 s, and at the end."""

  def __init__(self, what: str, total: int, unit: str):
    self._what, self._total, self._unit = what, total, unit
    self._start = time.monotonic()
    self._last = -math.inf

  def update(self, done: int, detail: str = "") -> None:
    now = time.monotonic()
    if now - self._last < _PROGRESS_EVERY_S and done < self._total:
      return
    self._last = now
    rate = done / max(now - self._start, 1e-9)
    eta = (self._total - done) / rate if rate > 0 else math.inf
    logging.info(
      "%s: %d/%d %s%s, %.1f %s/s, ETA %s.",
      self._what,
      done,
      self._total,
      self._unit,
      detail,
      rate,
      self._unit,
      "unknown" if math.isinf(eta) else time.strftime("%H:%M:%S", time.gmtime(eta)),
    )
