"""A model of the reward over architectures, which the controller may let choose its proposals.

`Controller(config=ControllerConfig(surrogate=...))` fits `RewardModel` to every architecture observed and
scores candidate proposals by its upper confidence bound; the LSTM stays the policy, trained by PPO on every
reward. `centred_ranks` turns rewards into the targets both learn from.
"""

from __future__ import annotations

import math

import numpy as np


def centred_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks of `values` scaled to [-0.5, 0.5]; ties share their mean rank (so equal rewards stay equal).

    Example:

    >>> centred_ranks(np.array([0.2, 0.9, 0.2, 0.5])).round(3).tolist()  # the two 0.2 share ranks 0 and 1
    [-0.333, 0.5, -0.333, 0.167]
    """
    if len(values) < 2:
        return np.zeros_like(values)
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values), dtype=np.float64)
    for value in np.unique(values):
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks / (len(values) - 1) - 0.5


class RewardModel:
    """A Gaussian process over architectures, with the kernel of a model additive in decisions and pairs.

    An architecture is its one-hot option ids. With `m` the number of decisions two architectures share, of
    `n`, the kernel `((1 + m / n) / 2) ** 2` is an inner product of features made of a constant, one
    indicator per option and one per pair of options: a ridge regression on every decision and every pair of
    decisions, solved in its dual form, so its cost grows with the observations, not with the pairs (about
    800 of them for MnasNet's space). The targets are centred ranks, so a few disastrous rewards do not
    flatten the differences between good ones.

    Example:

    >>> model = RewardModel(num_steps=2, num_options=4)  # two decisions of two options: ids 0-1 and 2-3
    >>> model.add(np.array([[0, 2], [1, 3], [0, 3]]))
    >>> model.fit(np.array([0.9, 0.1, 0.6]))
    >>> bounds = model.upper_bound(np.array([[1, 2]]), exploration=0.0)  # never observed: predicted
    >>> bool(bounds[0] < model.upper_bound(np.array([[0, 2]]), exploration=0.0)[0])
    True
    """

    #: Variance of the misfit: the additive-plus-pairs model does not fit a real table exactly.
    noise = 0.1

    def __init__(self, num_steps: int, num_options: int):
        import scipy.linalg  # here: only a controller with a surrogate pays for importing it

        self._linalg = scipy.linalg
        self._num_options = num_options
        self._steps = num_steps
        self.keys: list[tuple[int, ...]] = []  # the architectures fitted, as option ids, in arrival order
        self._features = np.zeros((0, num_options))
        self._cholesky = np.zeros((0, 0))
        self._weights = np.zeros(0)

    def add(self, ids: np.ndarray) -> None:
        """Appends architectures (rows of option ids): one row of the kernel's Cholesky factor each.

        Row by row, whatever the grouping: the factor of a model grown one observation at a time is the
        one a restored controller rebuilds, to the last bit (the kernel's entries are exact small counts).
        """
        count = len(self.keys)
        capacity = self._cholesky.shape[0]
        if count + len(ids) > capacity:
            # Grown by doubling, so appending N rows one at a time copies O(N^2) numbers, not O(N^3).
            capacity = max(2 * capacity, count + len(ids), 64)
            features, cholesky = np.zeros((capacity, self._num_options)), np.zeros((capacity, capacity))
            features[:count] = self._features[:count]
            cholesky[:count, :count] = self._cholesky[:count, :count]
            self._features, self._cholesky = features, cholesky
        for row in ids:
            self._features[count] = self._one_hot(row[None, :])[0]
            kernel = self._kernel(self._features[count : count + 1], count)[0]
            factor = self._linalg.solve_triangular(self._cholesky[:count, :count], kernel, lower=True)
            self._cholesky[count, :count] = factor
            self._cholesky[count, count] = math.sqrt(max(1.0 + self.noise - float(factor @ factor), 1e-12))
            self.keys.append(tuple(int(i) for i in row))
            count += 1

    def fit(self, rewards: np.ndarray) -> None:
        """Fits the model to the rewards of `keys`, in order (a key's reward may change between fits)."""
        ranks = centred_ranks(rewards) * math.sqrt(12.0)  # unit variance, as the kernel's prior
        count = len(self.keys)
        self._weights = self._linalg.cho_solve((self._cholesky[:count, :count], True), ranks)

    def _one_hot(self, ids: np.ndarray) -> np.ndarray:
        features = np.zeros((ids.shape[0], self._num_options))
        np.put_along_axis(features, ids, 1.0, axis=1)
        return features

    def _kernel(self, features: np.ndarray, count: int) -> np.ndarray:
        shared = features @ self._features[:count].T
        return ((1.0 + shared / self._steps) / 2.0) ** 2

    def upper_bound(self, ids: np.ndarray, exploration: float) -> np.ndarray:
        """Predicted centred rank plus `exploration` standard deviations per row; -inf: not the best."""
        count = len(self.keys)
        kernel = self._kernel(self._one_hot(ids), count)
        mean = kernel @ self._weights
        if exploration == 0:
            return mean
        # The predictive standard deviation is at most the prior's, 1: a candidate whose mean trails the best
        # mean by more than `exploration` cannot have the highest bound, and skips the triangular solve
        # (most of the cost: hundreds of candidates against hundreds of observations).
        bound = np.full(len(mean), -np.inf)
        contenders = mean >= mean.max() - exploration
        whitened = self._linalg.solve_triangular(
            self._cholesky[:count, :count], kernel[contenders].T, lower=True
        )
        variance = 1.0 - np.sum(whitened * whitened, axis=0)
        bound[contenders] = mean[contenders] + exploration * np.sqrt(np.maximum(variance, 0.0))
        return bound
