"""Estimates of entries a table has not profiled: a regressor per kernel type over the entry's configuration.

A table of the whole default space holds every entry a candidate can need, but a phone profiled for a few
hours, or a space with more widths and resolutions, leaves some out. `EntryEstimator` fits, for each kernel
type (`kernels.kernel_type`), a least-squares line in log space from an entry's configuration to its time
net of the baseline: the logarithms of its mult-adds, of the activations and weights it moves, of its input
size and channel counts, its kernel size and stride, and its kind of skip. A latency is a product of such
sizes far more than a sum, hence the logarithms. A kernel type with too few profiled entries of its own is
estimated by one regressor over all layer entries, with the kernel type as a feature. Stems, heads and
classifiers are a handful per space and always profiled: they are not estimated.

`LatencyLookupTable(on_missing="estimate")` uses it: a prediction that needs a missing entry takes its
estimate instead of failing or profiling, and says how many entries it estimated.

Example:

>>> from keras_mnas.latency.lut.configs import LayerConfig
>>> def conv(size, filters):
...     return LayerConfig("layer", (size, size), filters, filters, op="conv", kernel_size=3).key
>>> times = {conv(s, f): 1e-7 * s * s * 9 * f * f for s in (8, 16, 32) for f in (8, 16, 32, 64)}
>>> estimator = EntryEstimator.fit(times)
>>> round(estimator.predict(conv(24, 48)) / (1e-7 * 24 * 24 * 9 * 48 * 48), 2)  # estimated / true
1.0
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from keras_mnas.latency.lut.configs import LayerConfig
from keras_mnas.latency.lut.kernels import KERNEL_TYPES, kernel_type, mult_adds, traffic

# A kernel type needs this many profiled entries per feature for a regressor of its own.
_ENTRIES_PER_FEATURE = 3
# Keeps the fit stable where a feature barely varies (e.g. one kernel size only): in log units.
_RIDGE = 1e-2
# Entries faster than this are timing noise around the baseline: their logarithm would dominate the fit.
_FLOOR_MS = 1e-4


def _descriptors(config: LayerConfig) -> list[float]:
    activations, weights = traffic(config)
    return [
        math.log1p(mult_adds(config)),
        math.log1p(activations),
        math.log1p(weights),
        math.log(config.input_size[0] * config.input_size[1]),
        math.log(config.input_filters),
        math.log(config.output_filters),
        math.log(config.expanded_filters or config.input_filters),
        float(config.kernel_size),
        float(config.strides[0] * config.strides[1]),
        float(config.skip == "pool"),
        float(config.skip == "identity"),
    ]


_LAYER_TYPES = tuple(t for t in KERNEL_TYPES if t not in ("stem", "head", "top"))


def _pooled_descriptors(config: LayerConfig, kind: str) -> list[float]:
    return _descriptors(config) + [float(kind == t) for t in _LAYER_TYPES]


def _fit(rows: list[list[float]], log_ms: list[float]) -> np.ndarray:
    x = np.asarray(rows, dtype=np.float64)
    x = np.hstack([x, np.ones((len(x), 1))])
    y = np.asarray(log_ms, dtype=np.float64)
    penalty = math.sqrt(_RIDGE * len(x)) * np.eye(x.shape[1])
    penalty[-1, -1] = 0.0  # the constant is not pulled towards 0
    coefficients, *_ = np.linalg.lstsq(np.vstack([x, penalty]), np.concatenate([y, np.zeros(len(penalty))]))
    return coefficients


class EntryEstimator:
    """Per-kernel-type regressors of an entry's time net of the baseline, fitted on a table's entries.

    Attributes:
        coefficients: `{kernel type: coefficients}` of the types with a regressor of their own.
        pooled: The coefficients of the regressor over every layer entry, or `None` without layer entries.
        fitted_on: How many entries the regressors were fitted on.
    """

    def __init__(self, coefficients: Mapping[str, np.ndarray], pooled: np.ndarray | None, fitted_on: int):
        self.coefficients = dict(coefficients)
        self.pooled = pooled
        self.fitted_on = fitted_on

    @classmethod
    def fit(cls, entries: Mapping[str, float]) -> EntryEstimator:
        """Fits the regressors on `{entry key: milliseconds net of the baseline}`.

        Only layer entries are used (stems, heads and classifiers are not estimated).
        """
        by_type: dict[str, list[tuple[LayerConfig, float]]] = {}
        for key, ms in entries.items():
            config = LayerConfig.from_key(key)
            if config.kind == "layer":
                by_type.setdefault(kernel_type(config), []).append((config, math.log(max(ms, _FLOOR_MS))))
        own = {}
        features = len(_descriptors(LayerConfig("layer", (1, 1), 1, 1, op="conv"))) + 1
        for kind, rows in by_type.items():
            if len(rows) >= _ENTRIES_PER_FEATURE * features:
                own[kind] = _fit([_descriptors(c) for c, _ in rows], [y for _, y in rows])
        everything = [(c, kind, y) for kind, rows in by_type.items() for c, y in rows]
        pooled = (
            _fit([_pooled_descriptors(c, kind) for c, kind, _ in everything], [y for *_, y in everything])
            if everything
            else None
        )
        return cls(own, pooled, len(everything))

    def can_estimate(self, config: LayerConfig | str) -> bool:
        """Whether `predict` can estimate this entry (a layer, with at least one layer entry fitted)."""
        config = LayerConfig.from_key(config) if isinstance(config, str) else config
        return config.kind == "layer" and self.pooled is not None

    def predict(self, config: LayerConfig | str) -> float:
        """The estimated time of one entry net of the baseline, in milliseconds.

        Raises:
            ValueError: for an entry that is not a layer (stem, head, classifier...), or without any
                fitted layer entry.
        """
        config = LayerConfig.from_key(config) if isinstance(config, str) else config
        if not self.can_estimate(config):
            raise ValueError(
                f"Only layer entries are estimated, from a table holding some; received {config.key} "
                f"(the table has {self.fitted_on} layer entries)."
            )
        kind = kernel_type(config)
        if kind in self.coefficients:
            row, coefficients = _descriptors(config), self.coefficients[kind]
        else:
            row, coefficients = _pooled_descriptors(config, kind), self.pooled
        return float(math.exp(float(np.dot([*row, 1.0], coefficients))))
