"""The plain-language MIPAE vs DRNET comparison of the reproduction's report,
computed from the evaluations' numbers: who leads on each headline number,
whether the 95 % intervals separate them, and whether that matches the
paper's claim."""

from typing import Any

from mipae_jax.experiments import compare, paper


def _which(
  name: str, mipae: float, drnet: float, higher_is_better: bool
) -> tuple[str, str]:
  """(sentence comparing the two values, winner: "MIPAE", "DRNET" or "neither")."""
  if mipae == drnet:
    return f"{name}: MIPAE and DRNET are equal ({mipae:.4g}).", "neither"
  better = "MIPAE" if (mipae > drnet) == higher_is_better else "DRNET"
  word = "higher" if higher_is_better else "lower"
  return (
    f"{name}: MIPAE {mipae:.4g}, DRNET {drnet:.4g}; {better} is better by "
    f"{abs(mipae - drnet):.3g} ({word} is better).",
    better,
  )


def _intervals(
  a: float, a_ci: float | None, b: float, b_ci: float | None
) -> tuple[bool | None, str]:
  """(whether the 95 % intervals are disjoint, the sentence saying so);
  (None, "") when either number has no interval."""
  if a_ci is None or b_ci is None:
    return None, ""
  if abs(a - b) > a_ci + b_ci:
    return True, " The 95 % intervals do not overlap."
  return False, " The 95 % intervals overlap: the difference is within noise."


def _frame_value(run_metrics: dict[str, Any], name: str, frame: int):
  curves = run_metrics["frame_metrics"]
  index = curves["frames"].index(frame)
  curve = curves["curves"][name]
  return curve["mean"][index], curve["ci95"][index]


def _summary(wins: dict[str, tuple[str | None, bool | None]]) -> str:
  """One sentence: who leads on the headline numbers, and beyond noise or not.

  `wins` maps a headline number to (winner, clear): clear is whether the 95 %
  intervals are disjoint, None where the number has no interval.
  """

  mipae = [key for key, (winner, _) in wins.items() if winner == "MIPAE"]
  drnet = [key for key, (winner, _) in wins.items() if winner == "DRNET"]
  summary = (
    f"Summary: MIPAE leads on {len(mipae)} of {len(wins)} headline numbers"
    f" ({', '.join(mipae) or 'none'}), DRNET on {len(drnet)}"
    f" ({', '.join(drnet) or 'none'})."
  )
  if not wins:
    return summary
  led = mipae + drnet
  within_noise = [key for key in led if wins[key][1] is False]
  no_interval = [key for key in led if wins[key][1] is None]
  if within_noise:
    summary += f" Within the 95 % intervals (noise): {', '.join(within_noise)}."
  if no_interval:
    summary += f" Without an interval: {', '.join(no_interval)}."
  if len(mipae) < len(wins):
    return summary + (
      " This does not match the paper's claim that MIPAE is better on all of them."
    )
  if not set(mipae) & set(within_noise):
    return summary + (
      " This matches the paper's claim (Table I, Fig. 5): MIPAE disentangles "
      "better and predicts better at long range."
    )
  return summary + (
    " MIPAE leads on all of them, as in the paper, but not all leads are beyond "
    "noise: this run is consistent with the paper's claim, not evidence for it."
  )


def comparison_sentences(dataset: str, metrics: dict[str, dict[str, Any]]) -> list[str]:
  """The plain-language MIPAE vs DRNET comparison, computed from the numbers."""
  if not {"mipae", "drnet"} <= metrics.keys():
    return [
      "Only "
      + ", ".join(m.upper() for m in metrics)
      + " was evaluated: there is nothing to compare it with."
    ]
  mipae, drnet = metrics["mipae"], metrics["drnet"]
  sentences, wins = [], {}
  printed = paper.PAPER_TABLE_I.get(dataset)
  if mipae["mig"] and drnet["mig"]:
    partial = " (partial: content factors are the digit labels only)" * bool(
      mipae["mig"].get("partial")
    )
    for term in paper.TABLE_I_TERMS:
      sentence, winner = _which(
        term + partial * (term == "MIG"),
        mipae["mig"][term],
        drnet["mig"][term],
        paper.HIGHER_IS_BETTER[term],
      )
      clear, note = _intervals(
        mipae["mig"][term],
        mipae["mig"].get(f"{term}_ci95"),
        drnet["mig"][term],
        drnet["mig"].get(f"{term}_ci95"),
      )
      sentence += note
      if term == "MIG":
        wins["MIG"] = (winner, clear)
        if printed:
          paper_winner = (
            "MIPAE" if printed["mipae"]["MIG"] > printed["drnet"]["MIG"] else "DRNET"
          )
          agrees = "agrees" if winner == paper_winner else "does not agree"
          sentence += (
            f" The paper has MIPAE {printed['mipae']['MIG']:.4f} vs DRNET "
            f"{printed['drnet']['MIG']:.4f}: this run {agrees} with the paper's "
            "ordering."
          )
      sentences.append(sentence)
  horizon = mipae["num_future"]
  for name in compare.FRAME_METRICS:
    if not all(name in m["frame_metrics"]["curves"] for m in (mipae, drnet)):
      continue
    label = compare.FRAME_METRICS[name][0]
    for frame in sorted({1, horizon}):
      (a, a_ci), (b, b_ci) = (
        _frame_value(mipae, name, frame),
        _frame_value(drnet, name, frame),
      )
      sentence, winner = _which(
        f"{label} at frame {frame}", a, b, paper.HIGHER_IS_BETTER[name]
      )
      clear, note = _intervals(a, a_ci, b, b_ci)
      sentence += note
      if frame == horizon:
        wins[f"{label} at frame {frame}"] = (winner, clear)
      sentences.append(sentence)
    a = mipae["frame_metrics"]["curves"][name]["horizon_mean"]
    b = drnet["frame_metrics"]["curves"][name]["horizon_mean"]
    sentences.append(
      _which(
        f"{label} averaged over the {horizon} frames",
        a,
        b,
        paper.HIGHER_IS_BETTER[name],
      )[0]
    )
  sentences.append(_summary(wins))
  return sentences
