"""A latency lookup table used with a search space: profile a space, predict a candidate, skip the slow ones.

`keras_mnas.latency.LatencyLookupTable` knows layer configurations and architectures, not search spaces. The
functions here join the two through three methods a space provides: `layer_configs(include_preprocessing)`
(every entry a candidate can contain), `network_kwargs()` (how candidates are built) and `decode(values)`
with `default_values()` (a candidate's architecture from its hyperparameter values). `MnasSearchSpace` has
them; another space that has them works too.

Example:

```python
space = MnasSearchSpace(input_shape=(96, 96, 3))
lut = LatencyLookupTable(profiler=HostLatency())
len(search_space_configs(space))                            # the entries profile_space measures
profile_space(lut, space)
predict_candidate(lut, space, space.default_values())       # milliseconds
skip = budget_filter(lut, space, budget_ms=3.0)
skip(space.default_values())                                # True if far over 3 ms
```
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from keras_mnas.architecture import ArchSpec
from keras_mnas.builder import check_include_preprocessing
from keras_mnas.latency.base import LatencySource
from keras_mnas.latency.lut import LatencyLookupTable, LayerConfig, budget_limit, network_configs
from keras_mnas.utils.checks import check_type

_SPACE_METHODS = ("layer_configs", "network_kwargs", "decode", "default_values")


def _check_space(space: Any) -> None:
    if not all(callable(getattr(space, method, None)) for method in _SPACE_METHODS):
        raise ValueError(
            "Expected a search space such as a MnasSearchSpace (with layer_configs(), network_kwargs(), "
            f"decode() and default_values()); received {type(space).__name__}."
        )


def _check_table(table: Any) -> LatencyLookupTable:
    return check_type("table", table, LatencyLookupTable, "a keras_mnas.latency.LatencyLookupTable")


def search_space_configs(space: Any, *, include_preprocessing: bool = False) -> list[LayerConfig]:
    """Every distinct table entry a candidate of a search space can contain: `space.layer_configs(...)`.

    Args:
        space: The search space (a `MnasSearchSpace`).
        include_preprocessing: Whether candidates rescale and normalise their inputs themselves.

    Returns:
        The `LayerConfig`s, sorted by network position and then by key.

    Raises:
        ValueError: for something other than a search space.

    Example:

    ```python
    len(search_space_configs(MnasSearchSpace(input_shape=(96, 96, 3))))  # 1975
    ```
    """
    _check_space(space)
    return space.layer_configs(include_preprocessing=include_preprocessing)


def profile_space(
    table: LatencyLookupTable,
    space: Any,
    *,
    include_preprocessing: bool = False,
    source: LatencySource | None = None,
    progress: bool = True,
) -> int:
    """Profiles every distinct entry of a search space that the table does not hold yet.

    The entries are `space.layer_configs(include_preprocessing)`. Converting each one-piece model dominates
    the cost of an entry; `docs/benchmarks.md` gives measured durations.

    Args:
        table: The `LatencyLookupTable` to fill.
        space: The search space (a `MnasSearchSpace`).
        include_preprocessing: Set it as the search's `MnasHyperModel(include_preprocessing=...)`:
            candidates that normalise their inputs themselves need one more entry.
        source: The latency source (default: the table's profiler).
        progress: Whether to print a progress line.

    Returns:
        The number of entries measured.

    Raises:
        ValueError: for something other than a search space, or a source the table refuses.

    Example:

    ```python
    profile_space(lut, MnasSearchSpace(input_shape=(128, 128, 3)))
    ```
    """
    _check_table(table)
    configs = search_space_configs(space, include_preprocessing=include_preprocessing)
    return table.profile(configs, source=source, progress=progress)


def candidate_architecture(space: Any, values: Mapping[str, Any] | Any) -> ArchSpec:
    """A candidate's `ArchSpec` from its hyperparameter values, a `keras_tuner.HyperParameters`, or itself.

    Decisions a partial dict leaves out take the space's defaults, as `MnasHyperModel` does.

    Raises:
        ValueError: for anything else.
    """
    if isinstance(values, ArchSpec):
        return values
    if not isinstance(values, Mapping):
        values = getattr(values, "values", values)  # a keras_tuner.HyperParameters
    if not isinstance(values, Mapping):
        raise ValueError(
            "A candidate is given by its hyperparameter values (a dict or keras_tuner.HyperParameters) "
            f"or its ArchSpec; received {type(values).__name__}."
        )
    return space.architecture(values)


def predict_candidate(
    table: LatencyLookupTable,
    space: Any,
    values: Mapping[str, Any] | Any,
    *,
    include_preprocessing: bool = False,
) -> float:
    """Predicts a candidate's latency in milliseconds from its hyperparameter values (or its `ArchSpec`).

    The candidate is predicted as `MnasHyperModel` builds it: with `space.network_kwargs()` (input shape,
    classes, width multiplier), the classifier, and the input preprocessing when `include_preprocessing` (set
    it as the search's `MnasHyperModel` is).

    Args:
        table: The lookup table.
        space: The search space the values belong to.
        values: A `{name: value}` dict, a `keras_tuner.HyperParameters` or an `ArchSpec`.
        include_preprocessing: Whether candidates normalise their inputs themselves.

    Returns:
        The predicted latency in milliseconds.

    Raises:
        keras_mnas.latency.MissingEntryError: naming the entries the table lacks (with `on_missing="error"`).
        ValueError: for values that are not a candidate of the space.

    Example:

    ```python
    predict_candidate(lut, space, space.default_values())
    ```
    """
    _check_space(space)
    arch = candidate_architecture(space, values)
    return table.predict(arch, **space.network_kwargs(), include_preprocessing=include_preprocessing)


class Prefilter:
    """Tells, before a candidate is built, whether its predicted latency is far over a hard budget.

    "Far over" means above `budget_ms * (1 + tolerance)`: `tolerance` leaves room for the table's error, so
    choose it above the worst over-prediction `keras-mnas lut eval` reports for the table. `MnasTuner`'s
    `prefilter` and `budget_filter` both use this one check.

    A table that must predict candidates with input preprocessing has to hold that entry (or profile on
    demand): otherwise every prediction would fail and the prefilter would skip nothing, so it is refused.

    Args:
        table: The `LatencyLookupTable` that predicts.
        space: The search space the candidates come from.
        budget_ms: The hard latency budget.
        tolerance: How far above the budget a prediction must be, as a fraction of it.
        include_preprocessing: Whether candidates normalise their inputs themselves (as the search's
            `MnasHyperModel`).

    Raises:
        ValueError: for a bad budget or tolerance, something other than a search space, or a table without
            the preprocessing entry the candidates need.

    Example:

    ```python
    prefilter = Prefilter(lut, space, budget_ms=3.0, tolerance=0.25)
    predicted_ms = prefilter.predict(space.default_values())
    prefilter.exceeds(predicted_ms)      # True above 3.75 ms
    prefilter(space.default_values())    # the same, in one call
    ```
    """

    def __init__(
        self,
        table: LatencyLookupTable,
        space: Any,
        budget_ms: float,
        *,
        tolerance: float = 0.25,
        include_preprocessing: bool = False,
    ):
        self.table = _check_table(table)
        _check_space(space)
        self.space = space
        self.limit_ms = budget_limit(budget_ms, tolerance)
        self.budget_ms, self.tolerance = float(budget_ms), float(tolerance)
        check_include_preprocessing(include_preprocessing, space.network_kwargs()["input_shape"][-1])
        self.include_preprocessing = bool(include_preprocessing)
        if self.include_preprocessing and table.on_missing != "profile":
            preprocessing = network_configs(
                space.decode(space.default_values()), **space.network_kwargs(), include_preprocessing=True
            )[0]
            if preprocessing not in table:
                raise ValueError(
                    "The prefilter's table must hold the entry of the input preprocessing that "
                    f"MnasHyperModel(include_preprocessing=True) builds ({preprocessing.key}); the table has "
                    "none. Profile it with profile_space(lut, space, include_preprocessing=True) or "
                    "`keras-mnas lut build --include-preprocessing`, or load the table with "
                    "on_missing='profile'."
                )

    def predict(self, values: Mapping[str, Any] | Any) -> float:
        """The candidate's predicted latency in milliseconds (see `predict_candidate`)."""
        return float(
            predict_candidate(
                self.table, self.space, values, include_preprocessing=self.include_preprocessing
            )
        )

    def exceeds(self, predicted_ms: float) -> bool:
        """Whether a predicted latency is far over the budget (above `limit_ms`)."""
        return predicted_ms > self.limit_ms

    def __call__(self, values: Mapping[str, Any] | Any) -> bool:
        """Whether the candidate is far over the budget: True means "skip it"."""
        return self.exceeds(self.predict(values))

    def __repr__(self) -> str:
        return (
            f"Prefilter(budget {self.budget_ms:g} ms, tolerance {self.tolerance:g}, limit "
            f"{self.limit_ms:g} ms, {self.table!r})"
        )


# The settings that decide which runtime a figure describes, as sources' `config()` name them. A phone
# and a pool of such phones are one kind; runs, repeats and the like only change how long it takes to know.
_RUNTIME_SETTINGS = ("threads", "delegate", "core_mask")
_SOURCE_KINDS = {"android-pool": "android"}


def check_table_source(table: LatencyLookupTable, latency: LatencySource) -> None:
    """Refuses a table profiled on another runtime than the one a search measures with.

    A table predicts the latency of the source it was profiled on: a host table says nothing about a phone,
    and a phone without a delegate (as `profile_from_networks` profiles it) runs at another speed than with
    XNNPACK. Such a prefilter would skip candidates by the wrong numbers, silently. Tables without a
    recorded source, and settings a source does not name, are not checked.

    Args:
        table: The prefilter's table.
        latency: What the search measures with (a lookup table counts as the source it was profiled on).

    Raises:
        ValueError: naming the setting that differs.

    Example:

    ```python
    check_table_source(LatencyLookupTable.load("lut-host.json"), HostLatency())  # no error
    ```
    """
    profiled_on = table.source_config
    measured_on = latency.source_config if isinstance(latency, LatencyLookupTable) else latency.config()
    if not profiled_on or not measured_on:
        return
    differences = []
    kinds = [_SOURCE_KINDS.get(c.get("name"), c.get("name")) for c in (profiled_on, measured_on)]
    if kinds[0] != kinds[1]:
        differences.append(f"source {profiled_on.get('name')!r} vs {measured_on.get('name')!r}")
    for setting in _RUNTIME_SETTINGS:
        if setting in profiled_on and setting in measured_on and profiled_on[setting] != measured_on[setting]:
            differences.append(f"{setting} {profiled_on[setting]!r} vs {measured_on[setting]!r}")
    if differences:
        raise ValueError(
            "prefilter must predict the latency the search measures, but its table was profiled on another "
            f"runtime (table vs search: {'; '.join(differences)}). Profile a table on the search's own "
            "source (e.g. `keras-mnas lut build` with the same --device and --delegate)."
        )


def budget_filter(
    table: LatencyLookupTable,
    space: Any,
    budget_ms: float,
    *,
    tolerance: float = 0.25,
    include_preprocessing: bool = False,
) -> Prefilter:
    """A function telling, from a candidate's hyperparameter values, whether to skip it before building.

    Args:
        table: The lookup table.
        space: The search space the values belong to.
        budget_ms: The hard latency budget.
        tolerance: Skip only above `budget_ms * (1 + tolerance)`.
        include_preprocessing: Whether candidates normalise their inputs themselves (as the search's
            `MnasHyperModel`).

    Returns:
        A `Prefilter`: `skip(values) -> bool` accepts a `{name: value}` dict, a `keras_tuner.HyperParameters`
        or an `ArchSpec`; True means "far over budget".

    Example:

    ```python
    skip = budget_filter(lut, space, budget_ms=3.0)
    skip(space.default_values())
    ```
    """
    return Prefilter(
        table, space, budget_ms, tolerance=tolerance, include_preprocessing=include_preprocessing
    )
