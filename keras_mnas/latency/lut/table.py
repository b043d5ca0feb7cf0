"""The lookup table: per-layer timings on one latency source, saved as JSON with their provenance.

`LatencyLookupTable` is a `LatencySource` that predicts instead of measuring:

1. **Profile.** Each distinct `LayerConfig` is built as a tiny Keras model and measured once with the
   profiler's `measure`, exactly like a whole model. A phone source therefore profiles the way the host does.
2. **Compose.** A one-layer model's time includes the interpreter's fixed cost of one invocation. The table
   also measures an (almost) empty model, the *baseline*, and subtracts it from every entry, so a sum of
   entries counts that fixed cost zero times instead of once per layer.
   Alternatively (`profile_from_networks`), whole networks are measured with a per-operator profile and
   each operator's time goes to the entry its layer belongs to: a few dozen networks give the in-network
   cost of hundreds of entries, one push and one run each instead of one per entry.
3. **Calibrate.** A layer measured on its own runs with its weights and activations hot in the caches;
   inside a network it does not. Architectures are measured end to end and a `Calibration` is fitted on
   them: with enough measurements (`KERNEL_MEASUREMENTS`) one weight per kernel feature
   (`kernels.entry_features`), so each entry gets its in-network cost; with fewer, a line on the sum.
   Without calibration the prediction is the sum plus one baseline.

The file holds the entries, the baseline, the calibration, the source's `config()`, the provenance of the
measurements, the keras-mnas version and dates, under a format version.

Example:

```python
lut = LatencyLookupTable(profiler=HostLatency(), path="lut-host-96.json")
lut.profile_architectures(["a1", "b1", "small"], input_shape=(96, 96, 3))
lut.calibrate(["a1", "b1", "small"], input_shape=(96, 96, 3))
lut.predict("a1", input_shape=(96, 96, 3))  # milliseconds, without building anything
```
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import numbers
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from keras_mnas.architecture import ArchSpec, get_architecture
from keras_mnas.latency.base import QUANTIZATIONS, LatencyResult, LatencySource
from keras_mnas.latency.lut.calibration import Calibration, bootstrap_spread, fit_line, fit_terms
from keras_mnas.latency.lut.configs import (
    LayerConfig,
    _check_input_shape,
    model_configs,
    network_configs,
    network_keys,
    network_layer_names,
)
from keras_mnas.latency.lut.estimate import EntryEstimator
from keras_mnas.latency.lut.kernels import KERNEL_TYPES, entry_features, entry_times, operators_ms
from keras_mnas.utils.checks import check_choice, check_int, check_number
from keras_mnas.utils.io import atomic_write_json, read_json

logger = logging.getLogger(__name__)

#: Identifies a latency table file.
FORMAT_NAME = "keras-mnas-latency-table"
#: Bumped whenever the meaning of a table file changes; older or newer files are refused.
FORMAT_VERSION = 2
#: The version of a table with entries read off operator profiles (`in_network_ms`): an older keras-mnas
#: would subtract the baseline from them, so it must refuse such a file. Other tables stay version 2.
IN_NETWORK_FORMAT_VERSION = 3
# Version 1 files differ only in having line calibrations: they are read as such.
_READABLE_VERSIONS = (1, FORMAT_VERSION, IN_NETWORK_FORMAT_VERSION)
ON_MISSING = ("error", "profile", "estimate")
CALIBRATION_METHODS = ("auto", "kernels", "line")
#: With at least this many end-to-end measurements, `method="auto"` considers a per-kernel calibration.
KERNEL_MEASUREMENTS = 30
# How strongly a per-kernel calibration's weights are pulled towards the table's own figures (weight 1 on an
# entry's time alone, 0 on the other features).
_RIDGE = 0.03
# The share of its measurements an adaptive calibration chooses between two refits (4 refits for its
# chosen half).
_CHOSEN_PER_REFIT = 0.125
# Folds of the cross-validation with which method="auto" chooses between the two calibrations.
_FOLDS = 5

# Facts that change with every measurement; dropping them lets thousands of entries share a few records.
_VOLATILE_PROVENANCE = frozenset(
    {
        "model",
        "cache_key",
        "conversion_seconds",
        "per_repeat_median_ms",
        "temperatures",
        "temperature_c",
        "op_profile",
    }
)


class MissingEntryError(LookupError):
    """A prediction needs layer configurations the table has not profiled.

    Attributes:
        configs: The missing `LayerConfig`s, in network order.

    Example:

    ```python
    try:
        lut.predict(arch, input_shape=(96, 96, 3))
    except MissingEntryError as error:
        lut.profile(error.configs)
    ```
    """

    def __init__(self, configs: Sequence[LayerConfig]):
        self.configs = list(configs)
        shown = ", ".join(repr(c.key) for c in self.configs[:3])
        more = f" and {len(self.configs) - 3} more" if len(self.configs) > 3 else ""
        super().__init__(
            f"The latency table has no entry for {shown}{more}. Profile them first "
            "(`lut.profile(configs)`, `lut.profile_architectures(...)`, or `profile_space(lut, space)` from "
            "keras_mnas.search.latency_table), "
            "or create the table with a profiler and on_missing='profile' to profile on demand."
        )


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


class _Progress:
    """A progress line on stderr, at most every few seconds."""

    def __init__(self, total: int, enabled: bool, what: str):
        self.total, self.enabled, self.what = total, enabled, what
        self.start = self.last = time.monotonic()

    def update(self, done: int) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self.last < 5.0 and done < self.total):
            return
        self.last = now
        elapsed = now - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        left = (self.total - done) / rate if rate > 0 else float("nan")
        print(
            f"\r{self.what}: {done}/{self.total} ({rate:.2f}/s, about {left / 60:.1f} min left)   ",
            end="\n" if done >= self.total else "",
            file=sys.stderr,
            flush=True,
        )


class LatencyLookupTable(LatencySource):
    """A latency source that predicts from per-layer timings instead of measuring (`name = "lut"`).

    See the module docstring for how entries are profiled, composed and calibrated. Predictions return a
    `LatencyResult` with `runs=0` and `provenance["prediction"] = True`.

    Args:
        profiler: The `LatencySource` the entries are measured on (e.g. `HostLatency()` or a phone). Needed to
            profile and to calibrate; a loaded table predicts without it. A table only ever holds entries of
            one source configuration: a profiler whose `config()` differs from the table's is refused.
        quantization: `"float32"` or `"int8"`: which TFLite models the entries time.
        on_missing: `"error"` (default): predicting a network with unprofiled entries raises
            `MissingEntryError`, naming them; `"profile"`: they are profiled on demand with `profiler`
            (and the table is saved again when it has a `path`); `"estimate"`: a missing layer entry is
            estimated from its configuration by a regressor per kernel type fitted on the table's entries
            (`estimate.EntryEstimator`; a missing stem, head or classifier still raises). Estimates are
            not stored: the table keeps measurements only.
        path: Where the table is saved. A table with a path (given here, or set by `load` and `save`) is
            saved after profiling (and every `save_every_seconds` during it) and after calibration.

    Example:

    ```python
    lut = LatencyLookupTable(profiler=HostLatency())
    lut.profile_architectures(["a1", "b1", "small"], input_shape=(96, 96, 3))
    lut.calibrate(["a1", "b1", "small"], input_shape=(96, 96, 3))
    lut.predict("a1", input_shape=(96, 96, 3))
    lut.save("lut.json")
    ```
    """

    name = "lut"

    def __init__(
        self,
        *,
        profiler: LatencySource | None = None,
        quantization: str = "float32",
        on_missing: str = "error",
        path: str | os.PathLike | None = None,
    ):
        if profiler is not None and not isinstance(profiler, LatencySource):
            raise ValueError(
                f"profiler must be a keras_mnas.latency.LatencySource; received {type(profiler).__name__}."
            )
        if isinstance(profiler, LatencyLookupTable):
            raise ValueError("A lookup table cannot be profiled on another lookup table's predictions.")
        check_choice("quantization", quantization, QUANTIZATIONS)
        check_choice("on_missing", on_missing, ON_MISSING)
        if on_missing == "profile" and profiler is None:
            raise ValueError(
                "on_missing='profile' needs a profiler (the LatencySource to measure entries on)."
            )
        self.profiler = profiler
        self.quantization = quantization
        self.on_missing = on_missing
        if path is not None and os.path.exists(path):
            raise ValueError(
                f"{os.fspath(path)!r} already exists: open it with LatencyLookupTable.load(path, "
                "profiler=...) to extend it, or choose another path (a new table would overwrite it)."
            )
        self.path = os.fspath(path) if path is not None else None
        self.source_config: dict[str, Any] | None = _jsonable(profiler.config()) if profiler else None
        self.created = _now()
        self.updated = self.created
        self.keras_mnas_version = _keras_mnas_version()
        self.baseline: dict[str, Any] | None = None
        self.calibration: Calibration | None = None
        # key -> {"median_ms", "cv", "robust_cv" (when known), "runs", "provenance"}
        self._raw: dict[str, dict[str, Any]] = {}
        self._net: dict[str, float] = {}  # key -> entry minus baseline, what predictions add up
        self._cost: dict[str, float] = {}  # key -> in-network cost under a per-kernel calibration
        self._in_network: set[str] = set()  # keys read off operator profiles
        self._estimator: EntryEstimator | None = None  # fitted on the entries when first needed
        self._estimated: dict[str, float] = {}  # key -> estimated net ms, while the entries stay as they are
        self._provenance: list[dict[str, Any]] = []
        self._provenance_index: dict[str, int] = {}
        self._lock = threading.RLock()

    # ----------------------------------------------------------------------------------------------
    # Contents.

    def __len__(self) -> int:
        return len(self._raw)

    def __contains__(self, config: LayerConfig | str) -> bool:
        return (config.key if isinstance(config, LayerConfig) else config) in self._raw

    @property
    def format_version(self) -> int:
        """The version its file is written with: `IN_NETWORK_FORMAT_VERSION` with in-network entries."""
        return IN_NETWORK_FORMAT_VERSION if self._in_network else FORMAT_VERSION

    @property
    def keys(self) -> list[str]:
        """The keys of the profiled entries."""
        return list(self._raw)

    def entry_ms(self, config: LayerConfig | str) -> float:
        """An entry's latency net of the baseline (what a prediction adds for it), in milliseconds.

        Raises:
            MissingEntryError: when the configuration was not profiled.

        Example:

        ```python
        lut.entry_ms("head:i320_o1280@3x3")
        ```
        """
        key = config.key if isinstance(config, LayerConfig) else config
        if key not in self._net:
            raise MissingEntryError(
                [config if isinstance(config, LayerConfig) else LayerConfig.from_key(key)]
            )
        return self._net[key]

    def missing(self, configs: Iterable[LayerConfig]) -> list[LayerConfig]:
        """The configurations among `configs` that have no entry (duplicates removed, order kept)."""
        seen, result = set(), []
        for config in configs:
            if config.key not in self._raw and config.key not in seen:
                seen.add(config.key)
                result.append(config)
        return result

    # ----------------------------------------------------------------------------------------------
    # Profiling.

    def _require_profiler(self, source: LatencySource | None, what: str) -> LatencySource:
        source = source or self.profiler
        if source is None:
            raise ValueError(f"{what} needs a latency source: pass profiler= to LatencyLookupTable(...).")
        config = _jsonable(source.config())
        if self.source_config is None:
            self.source_config = config
        elif config != self.source_config:
            raise ValueError(
                f"This table holds entries measured on {self.source_config}; the source given now is "
                f"{config}. One table describes one source: make a new table for the other one."
            )
        return source

    def _measure(self, source: LatencySource, model, input_shape) -> LatencyResult:
        data = None
        if self.quantization == "int8":
            # The ranges it learns do not change the timing; random inputs of the right shape suffice.
            data = np.random.default_rng(0).random((4, *input_shape), dtype=np.float32)
        return source.measure(model, quantization=self.quantization, representative_data=data)

    def _record(self, result: LatencyResult) -> dict[str, Any]:
        provenance = {k: v for k, v in result.provenance.items() if k not in _VOLATILE_PROVENANCE}
        provenance = _jsonable({"result_source": result.source, **provenance})
        text = json.dumps(provenance, sort_keys=True)
        if text not in self._provenance_index:
            self._provenance_index[text] = len(self._provenance)
            self._provenance.append(provenance)
        return {
            "median_ms": float(result.median_ms),
            "cv": float(result.cv),
            **({} if result.robust_cv is None else {"robust_cv": float(result.robust_cv)}),
            "runs": int(result.runs),
            "provenance": self._provenance_index[text],
        }

    def _set_entry(self, key: str, record: dict[str, Any]) -> None:
        self._raw[key] = record
        self._estimator, self._estimated = None, {}
        if "in_network_ms" in record:
            self._in_network.add(key)
            # Read off a network's operator profile: the entry's own kernels, no invocation cost to remove.
            self._net[key] = float(record["median_ms"])
        elif "operators_ms" in record:
            self._in_network.discard(key)
            self._net[key] = float(record["operators_ms"])
        else:
            self._in_network.discard(key)
            baseline = self.baseline["median_ms"] if self.baseline else 0.0
            # A tiny layer may time below the baseline by noise; it then adds nothing, not a negative time.
            self._net[key] = max(record["median_ms"] - baseline, 0.0)
        if self.calibration is not None and self.calibration.terms:
            self._cost[key] = self.calibration.entry_cost(entry_features(key, self._net[key]))

    def _set_calibration(self, calibration: Calibration | None) -> None:
        self.calibration = calibration
        self._cost = {}
        if calibration is not None and calibration.terms:
            for key, net in self._net.items():
                self._cost[key] = calibration.entry_cost(entry_features(key, net))

    def measure_baseline(self, source: LatencySource | None = None) -> float:
        """Measures the fixed cost of one invocation: a model with a single ReLU on a 1x1x1 input.

        Called by the first `profile`; call it again to re-measure. Every entry is stored as measured and the
        baseline is subtracted when predicting.

        Returns:
            The baseline in milliseconds.
        """
        import keras

        source = self._require_profiler(source, "Measuring the baseline")
        inputs = keras.Input((1, 1, 1), name="input_layer")
        model = keras.Model(inputs, keras.layers.ReLU(name="baseline_relu")(inputs), name="lut_baseline")
        result = self._measure(source, model, (1, 1, 1))
        with self._lock:
            self.baseline = {"model": "ReLU on a 1x1x1 input", **self._record(result)}
            for key, record in list(self._raw.items()):
                self._set_entry(key, record)
            self.updated = _now()
        return float(result.median_ms)

    def profile(
        self,
        configs: Iterable[LayerConfig],
        *,
        source: LatencySource | None = None,
        progress: bool = True,
        save_every_seconds: float = 60.0,
        remeasure: bool = False,
    ) -> int:
        """Measures the configurations that have no entry yet, one tiny model each.

        With a source that records per-operator times (`AndroidLatency(op_profile=True)`), an entry is the
        time of its operators (`operators_ms` in the file), as `profile_from_networks` reads them off whole
        networks; otherwise its whole measurement less the baseline.

        Args:
            configs: `LayerConfig`s (e.g. `network_configs(...)` or `space.layer_configs()`).
            source: The latency source to measure on (default: the table's `profiler`).
            progress: Whether to print a progress line with the rate and time left on stderr.
            save_every_seconds: With a `path`, how often the table is saved while profiling, so an interrupted
                run keeps what it measured.
            remeasure: Measure configurations that already have an entry again.

        Returns:
            The number of configurations measured.

        Raises:
            ValueError: when the source's `config()` differs from the one the table was profiled on.

        Example:

        ```python
        lut.profile(network_configs("a1", input_shape=(96, 96, 3)))
        ```
        """
        configs = list(configs)
        for config in configs:
            if not isinstance(config, LayerConfig):
                raise ValueError(f"profile expects LayerConfig objects; received {config!r}.")
        source = self._require_profiler(source, "Profiling")
        todo = configs if remeasure else self.missing(configs)
        if remeasure:
            todo = list({c.key: c for c in todo}.values())
        if not todo:
            return 0
        if self.baseline is None:
            self.measure_baseline(source)
        measured = self._measure_each(
            todo,
            source,
            build=lambda config: config.build_model(),
            input_shape=lambda config: (*config.input_size, config.input_filters),
            name=lambda config: config.key,
            label="Profiling layer configurations",
            progress=progress,
            save_every_seconds=save_every_seconds,
        )
        for config, result in measured:
            record = self._record(result)
            profile = result.provenance.get("op_profile")
            if isinstance(profile, Mapping) and profile.get("by_node"):
                # The entry's own operators, without the invocation: the same figure a network's profile
                # gives an entry (profile_from_networks), whichever of the two measured it.
                record["operators_ms"] = round(operators_ms(profile["by_node"]), 6)
            with self._lock:
                self._set_entry(config.key, record)
                self.updated = _now()
        return len(todo)

    def _measure_each(
        self,
        items: Sequence[Any],
        source: LatencySource,
        *,
        build: Callable[[Any], Any],
        input_shape: Callable[[Any], tuple[int, ...]],
        name: Callable[[Any], str],
        label: str,
        progress: bool,
        save_every_seconds: float,
    ) -> Iterator[tuple[Any, LatencyResult]]:
        """Builds and measures each item, yielding `(item, result)`; saves along the way and at the end.

        The caller records each result before the next is measured, so a periodic save holds it.
        """
        bar = _Progress(len(items), progress, label)
        last_save = time.monotonic()
        for done, item in enumerate(items, start=1):
            model = build(item)
            try:
                result = self._measure(source, model, input_shape(item))
            except BaseException:
                # The source's own error (a model error, a device error) or an interrupt reaches the caller
                # unchanged; what was measured so far is kept.
                logger.error("%s: %r on %r failed.", label, name(item), source.name)
                if self.path:
                    self.save()
                raise
            finally:
                del model
            yield item, result
            bar.update(done)
            if self.path and time.monotonic() - last_save >= save_every_seconds:
                self.save()
                last_save = time.monotonic()
        if self.path:
            self.save()

    def profile_architectures(
        self,
        architectures: Iterable[ArchSpec | str | Sequence[str]],
        *,
        source: LatencySource | None = None,
        progress: bool = True,
        **network: Any,
    ) -> int:
        """Profiles every entry the given architectures need (only those not in the table yet).

        Args:
            architectures: Architectures (`ArchSpec`, reference names, block strings).
            source: The latency source (default: the profiler).
            progress: Whether to print a progress line.
            **network: How they are built, as for `network_configs` (`input_shape`, `depth_multiplier`,
                `classes`, `include_top`, ...).

        Returns:
            The number of configurations measured.

        Example:

        ```python
        lut.profile_architectures(["a1", "b1"], input_shape=(128, 128, 3), classes=10)
        ```
        """
        configs = [c for arch in architectures for c in network_configs(arch, **network)]
        return self.profile(configs, source=source, progress=progress)

    def profile_from_networks(
        self,
        architectures: Iterable[ArchSpec | str | Sequence[str]],
        *,
        source: LatencySource | None = None,
        progress: bool = True,
        save_every_seconds: float = 60.0,
        **network: Any,
    ) -> int:
        """Measures whole networks with a per-operator profile and takes every entry they hold from it.

        Each architecture is built and measured once with a source that records benchmark_model's
        per-operator times (`AndroidLatency(..., op_profile=True, delegate="none")`, or a pool of such
        phones). Each operator's time goes to the entry its layer belongs to (`kernels.entry_times`), so one
        measurement gives the in-network cost of every entry of the network. An entry seen in several
        networks keeps the median of its times (`in_network_ms` in the file lists them); these figures
        replace entries measured alone before. What the operators leave out, the cost of invoking the
        network, is the calibration's fixed cost.

        XNNPACK runs a whole network as one delegate node and names its internal operators by kind only, so
        its profile cannot be cut into entries reliably: this mode needs `delegate="none"`, and the table
        then predicts the runtime's built-in kernels.

        Entries no architecture holds stay missing: `missing(configs)` lists them, and `profile` measures them
        alone.

        Args:
            architectures: The networks to measure (e.g. a few dozen random architectures of the space).
            source: The latency source (default: the profiler); it must record operator profiles without a
                delegate.
            progress: Whether to print a progress line.
            save_every_seconds: With a `path`, how often the table is saved while measuring.
            **network: How they are built, as for `keras_mnas.build_model` (`input_shape`, `classes`, ...).

        Returns:
            The number of distinct entries these networks gave a time to.

        Raises:
            ValueError: for a source without operator profiles or with a delegate, or a profile that does
                not name the network's layers.

        Example:

        ```python
        phone = AndroidLatency("SERIAL", binary="benchmark_model", delegate="none", op_profile=True)
        lut = LatencyLookupTable(profiler=phone, path="lut-phone.json")
        lut.profile_from_networks(space.sample_architectures(40, seed=0), **network)
        ```
        """
        from keras_mnas.builder import build_model

        source = self._require_profiler(source, "Profiling from networks")
        check_op_profile_source(source.config())
        architectures = [get_architecture(a) for a in architectures]
        input_shape = _check_input_shape(network.get("input_shape", (224, 224, 3)))
        if self.baseline is None and architectures:
            self.measure_baseline(source)
        covered: set[str] = set()
        measured = self._measure_each(
            architectures,
            source,
            build=lambda arch: build_model(arch, **network),
            input_shape=lambda arch: input_shape,
            name=lambda arch: arch.name,
            label="Profiling whole networks",
            progress=progress,
            save_every_seconds=save_every_seconds,
        )
        for arch, result in measured:
            profile = result.provenance.get("op_profile")
            if not isinstance(profile, Mapping) or not profile.get("by_node"):
                raise ValueError(
                    f"The source {source.name!r} returned no per-operator profile "
                    "(provenance['op_profile']['by_node']): profile_from_networks needs one, e.g. "
                    "AndroidLatency(..., op_profile=True, delegate='none')."
                )
            keys = network_keys(arch, **network)
            times = entry_times(profile["by_node"], keys, network_layer_names(arch, **network))
            with self._lock:
                record = self._record(result)
                for key, ms in times.items():
                    previous = self._raw.get(key, {}).get("in_network_ms", [])
                    samples = [*previous, round(ms, 6)]
                    self._set_entry(
                        key,
                        {
                            "median_ms": float(np.median(samples)),
                            "cv": record["cv"],
                            "runs": record["runs"],
                            "provenance": record["provenance"],
                            "in_network_ms": samples,
                        },
                    )
                covered.update(times)
                self.updated = _now()
        return len(covered)

    # ----------------------------------------------------------------------------------------------
    # Predicting.

    def _sum_keys(
        self, keys: Sequence[str], make_configs: Callable[[], Sequence[LayerConfig]], costs: bool = False
    ) -> float:
        values = self._cost if costs else self._net
        try:
            return sum([values[key] for key in keys])
        except KeyError:
            pass
        configs = list(make_configs())
        missing = self.missing(configs)
        if self.on_missing == "profile":
            self.profile(missing, progress=False)
            values = self._cost if costs else self._net
            return sum(values[config.key] for config in configs)
        if self.on_missing == "estimate":
            estimates = self._estimate(missing)
            return sum(self._entry_value(config.key, estimates, costs) for config in configs)
        raise MissingEntryError(missing)

    def _estimate(self, configs: Sequence[LayerConfig]) -> dict[str, float]:
        """`{key: estimated net ms}` of missing entries (on_missing="estimate"); raises for the others."""
        with self._lock:
            if self._estimator is None:
                self._estimator = EntryEstimator.fit(self._net)
            impossible = [c for c in configs if not self._estimator.can_estimate(c)]
            if impossible:
                raise MissingEntryError(impossible)
            for config in configs:
                if config.key not in self._estimated:
                    self._estimated[config.key] = self._estimator.predict(config)
            return {config.key: self._estimated[config.key] for config in configs}

    def _entry_value(self, key: str, estimates: Mapping[str, float], costs: bool = False) -> float:
        """An entry's net time (or in-network cost, with `costs`): profiled, else from `estimates`."""
        if key in self._net:
            return self._cost[key] if costs else self._net[key]
        net = estimates[key]
        return self.calibration.entry_cost(entry_features(key, net)) if costs else net

    def estimated(self, configs: Sequence[LayerConfig]) -> list[LayerConfig]:
        """The configurations among `configs` a prediction estimates: the missing ones, with "estimate"."""
        return self.missing(configs) if self.on_missing == "estimate" else []

    def features(self, configs: Sequence[LayerConfig]) -> dict[str, float]:
        """The summed `kernels.entry_features` of a network's entries (what a per-kernel calibration weighs).

        Raises:
            MissingEntryError: naming the configurations the table lacks (with `on_missing="error"`).
        """
        configs = list(configs)
        if self.on_missing == "estimate":
            estimates = self._estimate(self.missing(configs))
        else:
            self.sum_entries(configs)  # profiles or raises for missing entries
            estimates = {}
        total: dict[str, float] = {}
        for config in configs:
            for name, value in entry_features(config.key, self._entry_value(config.key, estimates)).items():
                total[name] = total.get(name, 0.0) + value
        return total

    def sum_entries(self, configs: Sequence[LayerConfig]) -> float:
        """The sum of the entries (net of the baseline), uncalibrated; profiles or raises for missing ones."""
        configs = list(configs)
        return self._sum_keys([config.key for config in configs], lambda: configs)

    def lut_ms(self, arch: ArchSpec | str | Sequence[str] | Mapping[str, Any], **network: Any) -> float:
        """An architecture's uncalibrated sum of entries (what the calibration line is fitted on).

        Example:

        ```python
        lut.lut_ms("a1", input_shape=(96, 96, 3))
        ```
        """
        return self._sum_keys(network_keys(arch, **network), lambda: network_configs(arch, **network))

    def _predict_keys(self, keys: Sequence[str], make_configs: Callable[[], Sequence[LayerConfig]]) -> float:
        calibration = self.calibration
        if calibration is not None and calibration.terms:
            # Each entry's in-network cost was worked out once, when the calibration or the entry was set.
            return self._positive(calibration.intercept_ms + self._sum_keys(keys, make_configs, costs=True))
        lut_ms = self._sum_keys(keys, make_configs)
        if calibration is not None:
            return self._positive(calibration.apply(lut_ms), lut_ms)
        return self._positive(lut_ms + (self.baseline["median_ms"] if self.baseline else 0.0), lut_ms)

    def _positive(self, predicted: float, lut_ms: float | None = None) -> float:
        if not predicted > 0:
            lut_ms = predicted if lut_ms is None else lut_ms
            raise ValueError(
                f"The calibration maps a sum of entries of {lut_ms:.4f} ms to {predicted:.4f} ms: this "
                "network is outside the range the table was calibrated on. Calibrate on networks of "
                "similar size."
            )
        return predicted

    def predict_configs(self, configs: Sequence[LayerConfig]) -> float:
        """The predicted latency (ms) of a network given as its entries."""
        configs = list(configs)
        return self._predict_keys([config.key for config in configs], lambda: configs)

    def predict(self, arch: ArchSpec | str | Sequence[str] | Mapping[str, Any], **network: Any) -> float:
        """Predicts the latency of an architecture in milliseconds, without building it.

        Args:
            arch: An `ArchSpec`, a reference name, block strings or an architecture dict.
            **network: How it would be built, as for `keras_mnas.build_model`: `input_shape` (default
                `(224, 224, 3)`), `depth_multiplier`, `classes`, `include_top`, `pooling`,
                `classifier_activation`, `include_preprocessing`, `padding`.

        Returns:
            Under a per-kernel calibration, the fixed cost plus each entry's in-network cost; under a line,
            `scale * sum(entries) + intercept`; uncalibrated, `sum(entries) + baseline`.

        Raises:
            MissingEntryError: naming the configurations the table lacks (with `on_missing="error"`).

        Example:

        ```python
        lut.predict("a1", input_shape=(96, 96, 3), depth_multiplier=0.5)
        ```
        """
        return self._predict_keys(network_keys(arch, **network), lambda: network_configs(arch, **network))

    def _result(self, predicted_ms: float, entries: int, estimated: int = 0) -> LatencyResult:
        threads = (self.source_config or {}).get("threads", 1)
        return LatencyResult(
            median_ms=predicted_ms,
            mean_ms=predicted_ms,
            p90_ms=predicted_ms,
            std_ms=0.0,
            cv=0.0,
            runs=0,
            warmup_runs=0,
            threads=int(threads) if isinstance(threads, int) else 1,
            source=self.name,
            quantization=self.quantization,
            provenance={
                "prediction": True,
                "method": "sum of lookup-table entries"
                + (f", calibrated ({self.calibration.method})" if self.calibration else ""),
                "entries": entries,
                **({"estimated_entries": estimated} if estimated else {}),
                "table": self.path,
                "table_source": self.source_config,
                "format_version": self.format_version,
            },
        )

    def measure(self, model, *, quantization: str = "float32", representative_data=None) -> LatencyResult:
        """Predicts the latency of a model built by `keras_mnas.build_model` (as the tuner does).

        The model is read (`model_configs`), not converted or run. `representative_data` is ignored.

        Returns:
            A `LatencyResult` with `runs=0` and `provenance["prediction"] = True`.

        Raises:
            ValueError: when `quantization` differs from the table's, or the model was not built by
                keras-mnas.
            MissingEntryError: naming the configurations the table lacks (with `on_missing="error"`).

        Example:

        ```python
        lut.measure(keras_mnas.build_model("a1", input_shape=(96, 96, 3))).median_ms
        ```
        """
        if quantization != self.quantization:
            raise ValueError(
                f"This table holds {self.quantization} timings; it cannot predict "
                f"quantization={quantization!r}."
            )
        configs = model_configs(model)
        return self._result(self.predict_configs(configs), len(configs), len(self.estimated(configs)))

    def config(self) -> dict[str, Any]:
        """What the predictions depend on: the table's source, quantization and calibration."""
        calibration = (
            {
                "method": self.calibration.method,
                "scale": self.calibration.scale,
                "intercept_ms": self.calibration.intercept_ms,
                "terms": dict(self.calibration.terms),
            }
            if self.calibration
            else None
        )
        return {
            **super().config(),
            "format_version": self.format_version,
            "quantization": self.quantization,
            "source": self.source_config,
            "calibration": calibration,
        }

    # ----------------------------------------------------------------------------------------------
    # Budgets.

    def far_over_budget(
        self,
        arch: ArchSpec | str | Sequence[str] | Mapping[str, Any],
        budget_ms: float,
        *,
        tolerance: float = 0.25,
        **network: Any,
    ) -> bool:
        """Whether an architecture's predicted latency exceeds `budget_ms * (1 + tolerance)`.

        A candidate that fails this is not worth building, measuring or training under a hard latency
        constraint. `tolerance` leaves room for the prediction's error: choose it above the table's error on
        your models (the calibration's `relative_errors`, or the benchmark's figures).

        Example:

        ```python
        lut.far_over_budget("a1", 2.0, input_shape=(96, 96, 3))  # True if A1 predicts above 2.5 ms
        ```
        """
        return self.predict(arch, **network) > budget_limit(budget_ms, tolerance)

    # ----------------------------------------------------------------------------------------------
    # Calibration.

    def fit_calibration(
        self, measurements: Sequence[Mapping[str, Any]], *, method: str = "auto"
    ) -> Calibration:
        """Fits and sets the calibration from end-to-end measurements.

        Each measurement is a dict with `measured_ms` and `lut_ms` (the uncalibrated sum of entries,
        `sum_entries`, of the measured network). A per-kernel calibration also needs each network's entries:
        their summed `features` (`LatencyLookupTable.features`), or the `architecture` (`ArchSpec.to_dict()`
        or block strings) and the `network` arguments it was built with, from which the table works them
        out. Extra keys are kept in the table for the record.

        Args:
            measurements: The measured networks.
            method: `"kernels"`: one non-negative weight per kernel feature and a fixed cost
                (`calibration.fit_terms`), so each entry gets its own in-network cost; `"line"`:
                `scale * sum + intercept` (`fit_line`); `"auto"` (default): with at least
                `KERNEL_MEASUREMENTS` measurements, whichever of the two predicts the measurements left out
                of a 5-fold cross-validation better; a line with fewer. Both keep the fixed cost >= 0, so no
                network smaller than the calibration ones is predicted a negative latency because of noise.

        Raises:
            ValueError: for fewer than two measurements, equal sums, or a fit with a non-positive scale.

        Example:

        ```python
        lut.fit_calibration([{"lut_ms": 1.9, "measured_ms": 2.4}, {"lut_ms": 3.1, "measured_ms": 3.8}])
        ```
        """
        check_choice("method", method, CALIBRATION_METHODS)
        rows = [dict(m) for m in measurements]
        for row in rows:
            if "lut_ms" not in row or "measured_ms" not in row:
                raise ValueError(
                    f"Each calibration measurement needs 'lut_ms' and 'measured_ms'; received {row!r}."
                )
        if method == "auto" and len(rows) < KERNEL_MEASUREMENTS:
            method = "line"
        if method in ("auto", "kernels"):
            rows = [self._with_features(row) for row in rows]
        if method == "auto":
            # Keep the per-kernel calibration only where it predicts measurements it was not fitted on better
            # than the line does: how much the kernel types differ in a network depends on the device.
            method = min(("line", "kernels"), key=lambda m: _cross_validated_error(rows, m))
        if method == "kernels":
            terms, intercept = _fit_kernels(rows)
            calibration = Calibration(1.0, intercept, tuple(_jsonable(rows)), _now(), terms=terms)
        else:
            scale, intercept = fit_line(
                [r["lut_ms"] for r in rows], [r["measured_ms"] for r in rows], nonnegative_intercept=True
            )
            if scale <= 0:
                raise ValueError(
                    f"The calibration fit gives a non-positive scale ({scale:.4g}): the measured latencies "
                    "do not grow with the table's sums. Check that the table and the measurements come from "
                    "the same source, and calibrate on architectures of clearly different sizes."
                )
            calibration = Calibration(scale, intercept, tuple(_jsonable(rows)), _now())
        with self._lock:
            self._set_calibration(calibration)
            self.updated = _now()
        if self.path:
            self.save()
        return self.calibration

    def choose_calibration(
        self,
        measurements: Sequence[Mapping[str, Any]],
        candidates: Iterable[ArchSpec | str | Sequence[str]],
        count: int,
        *,
        seed: int = 0,
        **network: Any,
    ) -> list[ArchSpec]:
        """The `count` candidates a per-kernel calibration is least sure of: the ones to measure next.

        Adaptive sampling, as nn-Meter does it for kernel configurations: random architectures leave some
        mixes of kernels rare, and the calibration's error is highest there. Per-kernel fits on bootstrap
        resamples of `measurements` each predict every candidate (`calibration.bootstrap_spread`); the
        candidates on which they disagree most are returned. No candidate is built or measured here, but
        their entries must be in the table (they are profiled with `on_missing="profile"`).

        Args:
            measurements: The networks measured so far, as for `fit_calibration` (each with `measured_ms`
                and its `features`, or its `architecture` and `network`); at least two.
            candidates: The architectures that may be measured next (e.g. a pool of random ones).
            count: How many to return (at most the number of candidates).
            seed: Seeds the bootstrap resamples.
            **network: How the candidates are built, as for `keras_mnas.build_model`.

        Returns:
            The chosen architectures, the least certain first.

        Raises:
            ValueError: for fewer than two measurements or a `count` below 1.
            MissingEntryError: for candidates with entries the table lacks (with `on_missing="error"`).

        Example:

        ```python
        pool = space.sample_architectures(200, seed=1)
        rows = [...]  # what was measured so far: dicts with architecture, network and measured_ms
        lut.choose_calibration(rows, pool, 5, input_shape=(128, 128, 3))
        ```
        """
        check_int("count", count, minimum=1)
        rows = [self._with_features(row) for row in measurements]
        if len(rows) < 2:
            raise ValueError(
                f"Choosing calibration architectures needs at least 2 measurements; received {len(rows)}."
            )
        candidates = [get_architecture(a) for a in candidates]
        features = [self.features(network_configs(arch, **network)) for arch in candidates]
        spread = bootstrap_spread(
            [row["features"] for row in rows],
            [row["measured_ms"] for row in rows],
            features,
            seed=seed,
            prior=_kernel_prior(rows),
            ridge=_RIDGE,
        )
        order = sorted(range(len(candidates)), key=lambda i: -spread[i])
        return [candidates[i] for i in order[:count]]

    def calibrate(
        self,
        architectures: Iterable[ArchSpec | str | Sequence[str]],
        *,
        count: int | None = None,
        source: LatencySource | None = None,
        progress: bool = True,
        method: str = "auto",
        measure: Callable[[list[ArchSpec]], Sequence[float]] | None = None,
        **network: Any,
    ) -> Calibration:
        """Measures architectures end to end and fits the calibration on them (`fit_calibration`).

        Missing entries of these architectures are profiled first. A handful of architectures spanning the
        sizes you will predict (5-20) is enough for a line; a per-kernel calibration, the accurate one, needs
        at least `KERNEL_MEASUREMENTS` (docs/latency.md shows how its accuracy grows with their number).

        With `count` smaller than the number of `architectures`, these are a pool to choose from
        adaptively: the first half of `count` is measured as given (pass them in random order), then, a few
        at a time, those the calibration is least sure of (`choose_calibration`). Each measurement made
        this way also records `predicted_before_ms`, what the calibration fitted on the measurements before
        it predicted: an honest check on architectures the fit had not seen.

        Args:
            architectures: The architectures to measure, or the pool to choose `count` of.
            count: How many to measure (default: all of them).
            source: The latency source (default: the profiler; it must be the table's source).
            progress: Whether to print progress lines.
            method: `"auto"`, `"kernels"` or `"line"`, as for `fit_calibration`.
            measure: Measures a few architectures end to end and returns their milliseconds, in order, for
                measurements made another way than by `source` (other processes, another machine). The
                table's entries are still profiled with `source`. Default: `source` measures each one.
            **network: How they are built, as for `keras_mnas.build_model` (`input_shape`, `classes`, ...).

        Returns:
            The `Calibration`, also stored in the table.

        Raises:
            ValueError: for a `count` above the number of architectures or below 2, or a `measure` that
                does not return one positive figure per architecture.

        Example:

        ```python
        calibration = lut.calibrate(["a1", "b1", "small"], input_shape=(128, 128, 3))
        calibration.scale, calibration.intercept_ms, calibration.relative_errors
        pool = space.sample_architectures(160, seed=1)
        lut.calibrate(pool, count=40, input_shape=(128, 128, 3))  # 20 as drawn, 20 chosen
        ```
        """
        source = self._require_profiler(source, "Calibrating")
        architectures = [get_architecture(a) for a in architectures]
        count = len(architectures) if count is None else check_int("count", count, minimum=2)
        if count > len(architectures):
            raise ValueError(
                f"calibrate(count={count}) chooses from the architectures given, but received only "
                f"{len(architectures)}."
            )
        self.profile_architectures(architectures, source=source, progress=progress, **network)
        start = count if count == len(architectures) else max(2, count // 2)
        rows: list[dict[str, Any]] = []
        bar = _Progress(count, progress, "Measuring calibration models")

        def measure_rows(archs: list[ArchSpec], chosen: str) -> Iterator[dict[str, Any]]:
            if measure is None:
                for arch in archs:
                    measured = self._measure_network(source, arch, network)
                    yield self._calibration_row(arch, network, chosen, measured)
                return
            figures = list(measure(list(archs)))
            if len(figures) != len(archs) or not all(
                isinstance(ms, numbers.Real) and not isinstance(ms, bool) and math.isfinite(ms) and ms > 0
                for ms in figures
            ):
                raise ValueError(
                    "calibrate's `measure` must return one positive number of milliseconds per "
                    f"architecture; given {len(archs)} architectures, it returned {figures!r}."
                )
            for arch, ms in zip(archs, figures, strict=True):
                yield self._calibration_row(arch, network, chosen, {"measured_ms": float(ms)})

        for row in measure_rows(architectures[:start], "as given"):
            rows.append(row)
            bar.update(len(rows))
        pool = architectures[start:]
        step = max(1, int(count * _CHOSEN_PER_REFIT))
        while len(rows) < count:
            chosen = self.choose_calibration(rows, pool, min(step, count - len(rows)), **network)
            before = self.fit_calibration(rows, method=method)
            for arch, row in zip(chosen, measure_rows(chosen, "least certain"), strict=True):
                row["predicted_before_ms"] = self._predict_with(before, arch, network)
                rows.append(row)
                bar.update(len(rows))
            pool = [arch for arch in pool if all(arch is not c for c in chosen)]
        return self.fit_calibration(rows, method=method)

    def _measure_network(
        self, source: LatencySource, arch: ArchSpec, network: Mapping[str, Any]
    ) -> dict[str, float]:
        """Builds and measures one calibration network end to end."""
        from keras_mnas.builder import build_model

        model = build_model(arch, **network)
        result = self._measure(source, model, _check_input_shape(network.get("input_shape", (224, 224, 3))))
        del model
        return {"measured_ms": float(result.median_ms), "cv": float(result.cv)}

    def _calibration_row(
        self, arch: ArchSpec, network: Mapping[str, Any], chosen: str, measured: Mapping[str, float]
    ) -> dict[str, Any]:
        """The row `fit_calibration` takes for one measured calibration network."""
        return {
            "architecture": arch.to_dict(),
            "network": _jsonable(network),
            "lut_ms": self.lut_ms(arch, **network),
            "features": self.features(network_configs(arch, **network)),
            **measured,
            "chosen": chosen,
        }

    def _predict_with(self, calibration: Calibration, arch: ArchSpec, network: Mapping[str, Any]) -> float:
        configs = network_configs(arch, **network)
        if calibration.terms:
            return calibration.apply_features(self.features(configs))
        return calibration.apply(self.sum_entries(configs))

    def _with_features(self, measurement: Mapping[str, Any]) -> dict[str, Any]:
        """A measurement with its network's summed entry `features` (worked out from its architecture)."""
        row = dict(measurement)
        if "measured_ms" not in row:
            raise ValueError(f"Each calibration measurement needs 'measured_ms'; received {sorted(row)}.")
        if "features" not in row:
            if "architecture" not in row:
                raise ValueError(
                    "A per-kernel calibration needs each measurement's 'features', or its "
                    f"'architecture' and 'network'; received {sorted(row)}."
                )
            arch = get_architecture(row["architecture"])
            row["features"] = self.features(network_configs(arch, **row.get("network", {})))
        return row

    # ----------------------------------------------------------------------------------------------
    # Files.

    def to_dict(self) -> dict[str, Any]:
        """The table as a JSON-serialisable dict (what `save` writes)."""
        with self._lock:
            return {
                "format": FORMAT_NAME,
                "format_version": self.format_version,
                "keras_mnas_version": self.keras_mnas_version,
                "created": self.created,
                "updated": self.updated,
                "quantization": self.quantization,
                "source": self.source_config,
                "baseline": self.baseline,
                "calibration": self.calibration.to_dict() if self.calibration else None,
                "provenance": list(self._provenance),
                "entries": {key: dict(record) for key, record in self._raw.items()},
            }

    def save(self, path: str | os.PathLike | None = None) -> str:
        """Writes the table as JSON, atomically; returns the path (also remembered as `self.path`).

        Example:

        ```python
        lut.save("lut-host-128.json")
        ```
        """
        path = os.fspath(path) if path is not None else self.path
        if path is None:
            raise ValueError("save() needs a path: the table was neither loaded from nor saved to a file.")
        atomic_write_json(path, self.to_dict())
        self.path = path
        return path

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, Any],
        *,
        profiler: LatencySource | None = None,
        on_missing: str = "error",
        path: str | os.PathLike | None = None,
    ) -> LatencyLookupTable:
        """Rebuilds a table from `to_dict`'s output, checking its format.

        Raises:
            ValueError: for another format or format version, malformed entries, or a profiler whose
                `config()` differs from the table's source.
        """
        where = f" in {os.fspath(path)!r}" if path is not None else ""
        if not isinstance(data, Mapping) or data.get("format") != FORMAT_NAME:
            raise ValueError(f"Not a keras-mnas latency table{where}: expected 'format': {FORMAT_NAME!r}.")
        if data.get("format_version") not in _READABLE_VERSIONS:
            raise ValueError(
                f"Latency table{where} has format version {data.get('format_version')!r}; this "
                f"keras-mnas reads versions {', '.join(map(str, _READABLE_VERSIONS))}. Profile the table "
                "again with this version."
            )
        table = cls(quantization=data.get("quantization", "float32"))
        table.path = os.fspath(path) if path is not None else None
        table.source_config = data.get("source")
        table.created = str(data.get("created", ""))
        table.updated = str(data.get("updated", ""))
        table.keras_mnas_version = str(data.get("keras_mnas_version", ""))
        provenance = data.get("provenance") or []
        if not isinstance(provenance, list) or not all(isinstance(p, dict) for p in provenance):
            raise ValueError(f"Latency table{where}: 'provenance' must be a list of objects.")
        table._provenance = [dict(p) for p in provenance]
        table._provenance_index = {json.dumps(p, sort_keys=True): i for i, p in enumerate(table._provenance)}
        baseline = data.get("baseline")
        if baseline is not None:
            _check_record(baseline, "baseline", where, len(provenance))
        table.baseline = dict(baseline) if baseline is not None else None
        entries = data.get("entries")
        if not isinstance(entries, Mapping):
            raise ValueError(f"Latency table{where}: 'entries' must be an object of key -> measurement.")
        for key, record in entries.items():
            LayerConfig.from_key(key)  # a malformed key is an error now, not a silent miss later
            _check_record(record, key, where, len(provenance))
            table._set_entry(key, dict(record))
        if data.get("calibration") is not None:
            table._set_calibration(Calibration.from_dict(data["calibration"]))
        if profiler is not None:
            table._require_profiler(profiler, "A profiler")
            table.profiler = profiler
        check_choice("on_missing", on_missing, ON_MISSING)
        if on_missing == "profile" and profiler is None:
            raise ValueError(
                "on_missing='profile' needs a profiler (the LatencySource to measure entries on)."
            )
        table.on_missing = on_missing
        return table

    @classmethod
    def load(
        cls, path: str | os.PathLike, *, profiler: LatencySource | None = None, on_missing: str = "error"
    ) -> LatencyLookupTable:
        """Reads a table written by `save`.

        Args:
            path: The JSON file.
            profiler: Optional source to extend the table with (its `config()` must match the table's).
            on_missing: `"error"`, `"profile"` (needs `profiler`) or `"estimate"`, as for the constructor.

        Example:

        ```python
        lut = LatencyLookupTable.load("lut.json")
        ```
        """
        return cls.from_dict(read_json(path), profiler=profiler, on_missing=on_missing, path=path)

    def __repr__(self) -> str:
        source = (self.source_config or {}).get("name", "no source")
        calibrated = "calibrated" if self.calibration else "uncalibrated"
        return f"LatencyLookupTable({len(self)} entries, {self.quantization}, {source}, {calibrated})"


def _kernel_prior(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Weight 1 on every entry's time alone: inside a network a kernel costs what it costs alone unless the
    measurements say otherwise."""
    return {f"{kind}:ms": 1.0 for kind in KERNEL_TYPES} | {
        name: 1.0 for row in rows for name in row["features"] if name.endswith(":ms")
    }


def _fit_kernels(rows: Sequence[Mapping[str, Any]]) -> tuple[dict[str, float], float]:
    return fit_terms(
        [row["features"] for row in rows],
        [row["measured_ms"] for row in rows],
        prior=_kernel_prior(rows),
        ridge=_RIDGE,
    )


def _cross_validated_error(rows: Sequence[Mapping[str, Any]], method: str) -> float:
    """The mean relative error of a calibration method on measurements left out of its fit (k folds)."""
    errors = []
    for fold in range(_FOLDS):
        train = [row for i, row in enumerate(rows) if i % _FOLDS != fold]
        test = [row for i, row in enumerate(rows) if i % _FOLDS == fold]
        if method == "kernels":
            terms, intercept = _fit_kernels(train)
            calibration = Calibration(1.0, intercept, terms=terms)
            predicted = [calibration.apply_features(row["features"]) for row in test]
        else:
            try:
                x, y = [r["lut_ms"] for r in train], [r["measured_ms"] for r in train]
                scale, intercept = fit_line(x, y, nonnegative_intercept=True)
            except ValueError:
                return math.inf
            predicted = [scale * row["lut_ms"] + intercept for row in test]
        errors += [abs(p / row["measured_ms"] - 1) for p, row in zip(predicted, test, strict=True)]
    return float(np.mean(errors))


def budget_limit(budget_ms: float, tolerance: float) -> float:
    """The latency above which a candidate is far over a hard budget: `budget_ms * (1 + tolerance)`.

    Raises:
        ValueError: unless `budget_ms` is a positive and `tolerance` a non-negative finite number.

    Example:

    >>> budget_limit(2.0, 0.25)
    2.5
    """
    budget_ms = check_number("budget_ms", budget_ms, low=0, low_open=True)
    tolerance = check_number("tolerance", tolerance, low=0)
    return budget_ms * (1 + tolerance)


def check_op_profile_source(config: Mapping[str, Any]) -> None:
    """Checks that a source's `config()` records operator profiles without a delegate, phone by phone.

    Raises:
        ValueError: naming what is missing: `op_profile=True`, or `delegate="none"`.

    Example:

    >>> check_op_profile_source({"name": "android", "op_profile": True, "delegate": "none"})
    """
    settings = config.get("phone_settings")
    if isinstance(settings, list):
        phones = settings
    else:
        phones = [settings if isinstance(settings, Mapping) else config]
    for phone in phones:
        if not phone.get("op_profile"):
            raise ValueError(
                "Profiling from whole networks needs a source that records per-operator times: "
                "AndroidLatency(..., op_profile=True, delegate='none') (or a pool with these settings); "
                f"received the source {config.get('name')!r} without op_profile."
            )
        if phone.get("delegate") != "none":
            raise ValueError(
                "Profiling from whole networks needs delegate='none': a delegate runs the network as one "
                "node whose operators cannot be told apart by layer; received "
                f"delegate={phone.get('delegate')!r}."
            )


def _check_record(record: Any, key: str, where: str, provenance_count: int) -> None:
    # An entry read off an operator profile may round to 0 ms; one measured alone includes an invocation.
    in_network = isinstance(record, Mapping) and "in_network_ms" in record
    ok = (
        isinstance(record, Mapping)
        and isinstance(record.get("median_ms"), (int, float))
        and math.isfinite(record["median_ms"])
        and (record["median_ms"] >= 0 if in_network else record["median_ms"] > 0)
        and isinstance(record.get("provenance"), int)
        and 0 <= record["provenance"] < provenance_count
    )
    if not ok:
        raise ValueError(
            f"Latency table{where}: the entry {key!r} must be an object with a positive 'median_ms' and a "
            f"'provenance' index below {provenance_count}; received {record!r}."
        )


def _keras_mnas_version() -> str:
    import keras_mnas

    return str(getattr(keras_mnas, "__version__", "unknown"))
