"""Whether a cheap score can stand in for full training: rank agreement and the noise of training itself.

A one-shot search ranks candidates by their accuracy with inherited weights; a proxy task ranks them after a
few epochs. Either is worth only as much as it agrees with what full training would say. `proxy_check`
measures that on a handful of candidates, as Vertex AI NAS's proxy-task tools do: Kendall's tau between the
cheap score and the full one, and the coefficient of variation of repeated full trainings of one candidate,
which bounds how well any score can rank candidates that close.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from keras_mnas.utils.checks import check_int

#: Vertex AI NAS asks for at least 5 correlation candidates and suggests 10 to 20.
MIN_CANDIDATES = 5


def kendall_tau(first: Sequence[float], second: Sequence[float]) -> float:
    """Kendall's tau-b between two rankings (ties counted as neither agreement nor disagreement).

    Args:
        first: Scores of n candidates.
        second: Other scores of the same n candidates.

    Returns:
        A number in [-1, 1]: 1 when both order the candidates alike, -1 when one reverses the other.

    Raises:
        ValueError: with fewer than 2 candidates, unequal lengths, non-finite scores, or when either side
            gives every candidate the same score (no ranking to compare).

    Example:

    >>> kendall_tau([1, 2, 3, 4], [10, 20, 40, 30])
    0.6666666666666666
    """
    a = np.asarray(first, dtype=np.float64)
    b = np.asarray(second, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape or len(a) < 2 or not np.all(np.isfinite(a) & np.isfinite(b)):
        raise ValueError(
            "kendall_tau needs two equally long lists of at least 2 finite scores; received "
            f"{len(np.atleast_1d(a))} and {len(np.atleast_1d(b))} scores."
        )
    upper = np.triu_indices(len(a), k=1)
    da = np.sign(a[:, None] - a[None, :])[upper]
    db = np.sign(b[:, None] - b[None, :])[upper]
    untied_a, untied_b = np.count_nonzero(da), np.count_nonzero(db)
    if untied_a == 0 or untied_b == 0:
        raise ValueError("kendall_tau: one of the scores gives every candidate the same value; no ranking.")
    return float(np.sum(da * db) / np.sqrt(untied_a * untied_b))


def repeat_tau(runs: Sequence[Sequence[float]]) -> float:
    """How well repeated full trainings rank candidates alike: the mean Kendall tau between every two repeats.

    A cheap score is compared with full training, but full training is itself noisy: two trainings of the
    same candidates with different initial weights do not rank them alike. This is the ceiling: no cheap
    score agrees with one training better, on average, than another training does.

    Args:
        runs: At least 2 repeats, each the scores of the same candidates in the same order.

    Returns:
        The mean of `kendall_tau` over every pair of repeats.

    Raises:
        ValueError: with fewer than 2 repeats, or repeats that `kendall_tau` cannot compare.

    Example:

    >>> repeat_tau([[0.5, 0.6, 0.7, 0.8], [0.52, 0.58, 0.75, 0.74]])
    0.6666666666666666
    """
    runs = [list(run) for run in runs]
    if len(runs) < 2:
        raise ValueError(f"repeat_tau needs at least 2 repeats of the same candidates; received {len(runs)}.")
    taus = [kendall_tau(runs[i], runs[j]) for i in range(len(runs)) for j in range(i + 1, len(runs))]
    return float(np.mean(taus))


@dataclasses.dataclass(frozen=True)
class ProxyReport:
    """What `proxy_check` found.

    Attributes:
        candidates: The candidates, as given.
        cheap: Their cheap scores.
        full: Their full-training scores.
        tau: Kendall's tau between `cheap` and `full`.
        repeats: The full scores of repeated trainings of the first candidate.
        cv: Their coefficient of variation (standard deviation over mean).
    """

    candidates: tuple
    cheap: tuple[float, ...]
    full: tuple[float, ...]
    tau: float
    repeats: tuple[float, ...]
    cv: float

    def describe(self) -> str:
        """One line: `Kendall tau 0.71 over 10 candidates; repeated training CV 1.2% (3 runs)`."""
        return (
            f"Kendall tau {self.tau:.2f} over {len(self.candidates)} candidates; repeated training CV "
            f"{100 * self.cv:.1f}% ({len(self.repeats)} runs)"
        )


def proxy_check(
    candidates: Sequence[Any],
    cheap_score: Callable[[Any], float],
    full_score: Callable[[Any], float],
    *,
    repeats: int = 3,
) -> ProxyReport:
    """Measures whether a cheap score ranks candidates as full training does.

    Args:
        candidates: At least 5 candidates (hyperparameter values, `ArchSpec`s: anything the scores take),
            spread over the space.
        cheap_score: `cheap_score(candidate) -> float`, e.g. the accuracy with inherited weights
            (`one_shot.evaluate_path`) or after a few epochs.
        full_score: `full_score(candidate) -> float`, the accuracy after full training.
        repeats: Full trainings of the first candidate (its first score included) for the coefficient of
            variation; at least 2.

    Returns:
        A `ProxyReport`.

    Raises:
        ValueError: with fewer than 5 candidates, or a score that is not a finite number.

    Example:

    ```python
    report = proxy_check(space.sample_values(10), cheap_score=inherited_accuracy, full_score=trained_accuracy)
    print(report.describe())
    ```
    """
    candidates = tuple(candidates)
    if len(candidates) < MIN_CANDIDATES:
        raise ValueError(
            f"`candidates` must hold at least {MIN_CANDIDATES} candidates (10 to 20 are better); received "
            f"{len(candidates)}."
        )
    repeats = check_int("repeats", repeats, minimum=2)

    def scored(function, candidate, what):
        value = function(candidate)
        try:
            value = float(value)
        except (TypeError, ValueError):
            value = float("nan")
        if not np.isfinite(value):
            raise ValueError(f"{what} must return a finite number; received {value!r} for {candidate!r}.")
        return value

    cheap = tuple(scored(cheap_score, c, "cheap_score") for c in candidates)
    full = tuple(scored(full_score, c, "full_score") for c in candidates)
    again = [full[0]] + [scored(full_score, candidates[0], "full_score") for _ in range(repeats - 1)]
    mean = float(np.mean(again))
    cv = float(np.std(again) / abs(mean)) if mean else float("inf")
    return ProxyReport(candidates, cheap, full, kendall_tau(cheap, full), tuple(again), cv)
