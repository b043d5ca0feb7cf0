"""The common interface every latency source implements, and the base of the sources that time TFLite.

A latency source turns a Keras model into a `LatencyResult`. The host CPU timer, the Android phone, the
phone pool and the lookup-table predictor all implement `LatencySource`, so the tuner and the command line
can use any of them without knowing which one they hold.

The three sources that time a TFLite flatbuffer (`HostLatency`, `AndroidLatency`, `AndroidDevicePool`)
share `TFLiteLatencySource`: it converts the model once, consults one content-keyed result cache, and hands
the bytes to the source's `measure_tflite`. A new source of that kind implements `measure_tflite` only.

Example:

```python
class MyBoardLatency(TFLiteLatencySource):
    name = "my-board"

    def measure_tflite(self, tflite_bytes, *, quantization="float32", extra_provenance=None):
        tflite_bytes = validate_tflite(tflite_bytes)
        ms = my_board.time(tflite_bytes)  # your runner
        return LatencyResult(median_ms=ms, mean_ms=ms, p90_ms=ms, std_ms=0.0, cv=0.0, runs=1,
                             warmup_runs=0, threads=1, source=self.name, quantization=quantization,
                             provenance=dict(extra_provenance or {}))
```
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import json
import logging
import math
import os
import sys
import threading
import time
from typing import Any, NamedTuple

import numpy as np

from keras_mnas import tflite as tflite_lib
from keras_mnas.tflite import QUANTIZATIONS, validate_tflite
from keras_mnas.utils.checks import check_bool, check_choice
from keras_mnas.utils.io import atomic_write_json

logger = logging.getLogger(__name__)

__all__ = [
    "QUANTIZATIONS",
    "LatencyResult",
    "LatencySource",
    "TFLiteLatencySource",
    "is_unstable",
    "judged_spread",
    "package_version",
    "percentile_cv",
    "validate_tflite",
]

# Bumped whenever what a cached figure means changes, so stale disk caches are ignored.
_CACHE_FORMAT = 2

# Above this spread (see `LatencyResult.spread`) a figure is flagged unstable.
UNSTABLE_SPREAD = 0.05

# Guards every source's "already warned of an unstable figure" flag (rarely taken: only for unstable figures).
_WARNED_LOCK = threading.Lock()

# The 95th percentile of the standard normal: (p95 - p5) / (2 * this) estimates a normal sigma.
_Z95 = 1.6448536269514722


def percentile_cv(p5: float, median: float, p95: float) -> float:
    """The coefficient of variation implied by the 5th-95th percentile range of a set of runs.

    `(p95 - p5) / (2 * 1.645 * median)`: for normally distributed times it equals `std / mean`; unlike it,
    up to 5% of outliers on either side leave it unchanged.

    Example:

    ```python
    percentile_cv(p5=9.0, median=10.0, p95=11.0)  # about 0.061
    ```
    """
    if not median > 0:
        raise ValueError(f"`median` must be positive; received {median!r}.")
    return max(0.0, (p95 - p5) / (2 * _Z95 * median))


def judged_spread(cv: float, robust_cv: float | None) -> float:
    """The spread the unstable flag judges: `robust_cv` when known, else `cv`.

    `LatencyResult.spread` applies it to a result; a lookup table's saved entries keep the same two numbers.
    """
    return cv if robust_cv is None else robust_cv


def is_unstable(spread: float | None) -> bool:
    """Whether a spread (see `judged_spread`) is above 5%, the *unstable* flag; `None` (none known) is not.

    `LatencyResult.unstable` applies it to a result; a trial's recorded `latency_spread` is judged the same.
    """
    return spread is not None and spread > UNSTABLE_SPREAD


@dataclasses.dataclass(frozen=True)
class LatencyResult:
    """One latency figure with the statistics and provenance behind it.

    All times are milliseconds. `median_ms` is *the* figure: the search, the reward and the tables use it.

    Attributes:
        median_ms: Median latency over the measured runs (or the predicted latency).
        mean_ms: Mean latency over the measured runs.
        p90_ms: 90th percentile of the measured runs.
        std_ms: Standard deviation of the measured runs.
        cv: Coefficient of variation (`std_ms / mean_ms`), as benchmark_model's `std` gives it. Over
            thousands of runs of a small model, a handful of runs pre-empted by the OS dominate it.
        runs: Number of timed runs behind the statistics (0 for a prediction).
        warmup_runs: Number of untimed warm-up runs.
        threads: Number of interpreter threads.
        source: Which latency source produced this, e.g. `"host"`, `"android:SERIAL"`, `"lut"`.
        quantization: `"float32"` or `"int8"`.
        tflite_bytes: Size of the TFLite flatbuffer that was timed (0 when none was built).
        sha256: SHA-256 of that flatbuffer (empty when none was built).
        provenance: Free-form facts about where and how it was measured (machine, device, versions).
        robust_cv: The spread of the middle 90% of the runs as a coefficient of variation,
            `(p95 - p5) / (2 * 1.645 * median)`: equal to `cv` for normally distributed times, and unmoved
            by a few outliers. `None` when the runs' percentiles are unknown (benchmark_model before
            LiteRT prints none).
    """

    median_ms: float
    mean_ms: float
    p90_ms: float
    std_ms: float
    cv: float
    runs: int
    warmup_runs: int
    threads: int
    source: str
    quantization: str = "float32"
    tflite_bytes: int = 0
    sha256: str = ""
    provenance: dict[str, Any] = dataclasses.field(default_factory=dict)
    robust_cv: float | None = None

    def __post_init__(self):
        for name in ("median_ms", "mean_ms", "p90_ms", "std_ms", "cv", "robust_cv"):
            value = getattr(self, name)
            if value is None and name == "robust_cv":
                continue
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(
                    f"LatencyResult.{name} must be a finite, non-negative number; received {value!r}."
                )
        if self.median_ms <= 0:
            raise ValueError(
                f"LatencyResult.median_ms must be positive; received {self.median_ms!r}. A zero latency "
                "means nothing was measured."
            )
        if self.quantization not in QUANTIZATIONS:
            raise ValueError(
                f"LatencyResult.quantization must be one of {QUANTIZATIONS}; received {self.quantization!r}."
            )

    @property
    def spread(self) -> float:
        """`robust_cv` when known, else `cv`: the spread `unstable` judges."""
        return judged_spread(self.cv, self.robust_cv)

    @property
    def unstable(self) -> bool:
        """True when `spread` is above 5%: the runs disagree and the figure deserves suspicion.

        The robust spread is judged when known, so that a few pre-empted runs among thousands (the usual
        case for a model of microseconds on a desktop OS) do not flag every figure, while a machine busy
        for much of the measurement still does.
        """
        return is_unstable(self.spread)

    def to_dict(self) -> dict[str, Any]:
        """Returns a JSON-serialisable dict (the inverse of `from_dict`)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencyResult:
        """Rebuilds a result written by `to_dict`; unknown keys are an error."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - fields
        if unknown:
            raise ValueError(
                f"Unknown LatencyResult fields {sorted(unknown)}; expected a subset of {sorted(fields)}."
            )
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


class LatencySource(abc.ABC):
    """Something that can tell how long a model takes to run.

    Subclasses implement `measure`; a source that times TFLite bytes subclasses `TFLiteLatencySource` and
    implements `measure_tflite` instead. A source must raise (never return a made-up number) when it cannot
    measure: an unconvertible model, a device error, an undefined input shape.

    Example:

    ```python
    source = keras_mnas.latency.HostLatency()
    result = source.measure(keras_mnas.applications.MnasNetA1(weights=None))
    print(result.median_ms)
    ```
    """

    #: Short name recorded in results, e.g. "host".
    name: str = "latency"

    @abc.abstractmethod
    def measure(self, model, *, quantization: str = "float32", representative_data=None) -> LatencyResult:
        """Measures (or predicts) the latency of one Keras model.

        Args:
            model: A built Keras model with a fully defined input shape (batch size aside).
            quantization: `"float32"` or `"int8"` (full-integer post-training quantization).
            representative_data: For int8: an array of input samples, or a callable returning an iterable of
                input batches, used to calibrate the quantization ranges.

        Returns:
            A `LatencyResult`.
        """

    def config(self) -> dict[str, Any]:
        """JSON-serialisable settings that change the measured figure (recorded with a search)."""
        return {"name": self.name}

    def _unstable_log_level(self) -> int:
        """The level to log an unstable figure at: WARNING for this source's first, INFO for later ones.

        The figure itself is returned flagged, and a search's progress line shows each trial's; repeating the
        warning would print it for nearly every candidate of a search on a noisy host or a hot phone.
        """
        with _WARNED_LOCK:
            first = not getattr(self, "_warned_unstable", False)
            self._warned_unstable = True
        return logging.WARNING if first else logging.INFO

    def _log_if_unstable(self, result: LatencyResult, message: str, *args: Any) -> None:
        """Logs `message % args` for an unstable `result`, at the level `_unstable_log_level` gives.

        The message goes to the logger of the subclass's module, so each source keeps its own logger name.
        """
        if result.unstable:
            logging.getLogger(type(self).__module__).log(self._unstable_log_level(), message, *args)


class _Prepared(NamedTuple):
    """A model ready to time: its cached figure, or its TFLite bytes and the provenance of its conversion."""

    key: str | None
    cached: LatencyResult | None
    tflite_bytes: bytes | None
    provenance: dict[str, Any] | None


class TFLiteLatencySource(LatencySource):
    """A latency source that times TFLite flatbuffers: convert once, cache, then `measure_tflite`.

    `measure` is written here once for every such source. It checks the quantization, materialises the int8
    calibration data (once: it is both fingerprinted and fed to the converter), looks the model up in the
    result cache, and on a miss converts it with `convert_to_tflite` (`conversion`, `calibration_samples`),
    timing the conversion, and calls `measure_tflite` with the bytes and the conversion's provenance
    (`model`, `conversion`, `conversion_seconds`, and `cache_key` when caching).

    The cache key is a SHA-256 over everything that decides the figure: the model's class and config
    (`model.get_config()`, layer names included), its input shapes and dtypes, the bytes of all its weights
    (these, with the conversion settings and the converter's version, decide the TFLite bytes), the
    quantization, the calibration data (int8 only), this source's `config()` (which names the device and the
    timing settings), and `cache_environment()` (the converter's version, and for the host the machine).
    Because it is computed before conversion, a hit costs neither conversion nor timing. Models whose config
    cannot be serialised are measured every time. The cache lives in memory and, with `cache_dir`, on disk
    (one JSON file per figure, written atomically, so several processes can share a directory).

    Whether figures are reused at all is the constructor's `cache`: `None` takes the class's
    `cache_by_default` (on for the host, where a figure is cheap to trust and costly to repeat in a search;
    off for phones, where a user asking for a measurement expects the phone to run it), and a `cache_dir`
    turns caching on.

    Subclasses implement `measure_tflite`, and set `conversion` and `calibration_samples` when they take them
    as settings (and name them in `config()`).

    Args:
        cache: Whether to reuse figures of identical models; `None` for the class's default (see above).
        cache_dir: Optional directory for the on-disk cache (created when needed); implies `cache=True`.

    Raises:
        ValueError: for `cache=False` together with a `cache_dir`.

    Example:

    ```python
    phone = AndroidLatency("R5CT1234ABC", binary="benchmark_model", cache_dir="~/.cache/keras_mnas/phone")
    first = phone.measure(model)  # converted once, timed on the phone
    phone.measure(model) is first  # True: same model, same settings
    ```
    """

    #: The `convert_to_tflite` method `measure` converts with.
    conversion: str = "concrete_function"
    #: Samples of a representative array used for int8 calibration.
    calibration_samples: int = tflite_lib.DEFAULT_CALIBRATION_SAMPLES
    #: Whether figures are reused when the constructor is given `cache=None` and no `cache_dir`.
    cache_by_default: bool = False

    def __init__(self, *, cache: bool | None = None, cache_dir: str | os.PathLike | None = None):
        if cache is not None:
            check_bool("cache", cache)
        if cache is False and cache_dir:
            raise ValueError(
                f"`cache_dir` ({os.fspath(cache_dir)!r}) is a result cache, but `cache=False` turns caching "
                "off; pass one or the other."
            )
        self.cache_dir = os.path.abspath(os.path.expanduser(os.fspath(cache_dir))) if cache_dir else None
        self.cache = bool(cache) if cache is not None else self.cache_by_default or self.cache_dir is not None
        self._cache: dict[str, LatencyResult] = {}
        self._cache_lock = threading.Lock()

    # ----------------------------------------------------------------------------------------------
    # Measuring.

    def measure(self, model, *, quantization: str = "float32", representative_data=None) -> LatencyResult:
        """Converts a Keras model to TFLite and times it with `measure_tflite`, or returns its cached figure.

        Args:
            model: A built Keras model with a fully defined input shape (batch size aside).
            quantization: `"float32"` or `"int8"` (full-integer post-training quantization).
            representative_data: For int8: an array of input samples, or a callable returning an iterable of
                input batches (called once per measurement, to fingerprint and calibrate). Ignored for
                float32.

        Returns:
            A `LatencyResult`; with caching on, `provenance["cache_key"]` is the key it is cached under.

        Raises:
            ValueError: for an undefined input shape, an unknown quantization, int8 without data.
            RuntimeError: when conversion fails.
            LatencyMeasurementError: as `measure_tflite` raises it (device sources).

        Example:

        ```python
        result = HostLatency().measure(model, quantization="int8", representative_data=images)
        ```
        """
        prepared = self._prepare(model, quantization, representative_data)
        if prepared.cached is not None:
            return prepared.cached
        result = self.measure_tflite(
            prepared.tflite_bytes, quantization=quantization, extra_provenance=prepared.provenance
        )
        self._remember(prepared.key, result)
        return result

    @abc.abstractmethod
    def measure_tflite(
        self,
        tflite_bytes: bytes,
        *,
        quantization: str = "float32",
        extra_provenance: dict[str, Any] | None = None,
    ) -> LatencyResult:
        """Times a TFLite flatbuffer as it is (never cached).

        Args:
            tflite_bytes: The model, e.g. read from a `.tflite` file. Check it with `validate_tflite`.
            quantization: What the model is, recorded in the result: `"float32"` or `"int8"`.
            extra_provenance: Extra facts recorded in the result's `provenance`.

        Returns:
            A `LatencyResult` whose `tflite_bytes` and `sha256` describe these bytes.
        """

    def _prepare(self, model, quantization: str, representative_data) -> _Prepared:
        """The one conversion path: calibration data, cache lookup, then (on a miss) a timed conversion."""
        specs, batches = self._specs_and_batches(model, quantization, representative_data)
        key = self._cache_key(model, specs, quantization, batches) if self.cache else None
        if key is not None:
            cached = self._lookup(key)
            if cached is not None:
                return _Prepared(key, cached, None, None)
        start = time.perf_counter()
        tflite_bytes = tflite_lib.convert_to_tflite(
            model,
            quantization=quantization,
            representative_data=(lambda: iter(batches)) if batches is not None else None,
            method=self.conversion,
            calibration_samples=self.calibration_samples,
        )
        provenance = {
            "model": getattr(model, "name", type(model).__name__),
            "conversion": self.conversion,
            "conversion_seconds": round(time.perf_counter() - start, 3),
            **({"cache_key": key} if key is not None else {}),
        }
        return _Prepared(key, None, tflite_bytes, provenance)

    def _tflite_result(
        self,
        tflite_bytes: bytes,
        *,
        quantization: str,
        source: str,
        median_ms: float,
        mean_ms: float,
        p90_ms: float,
        std_ms: float,
        runs: int,
        robust_cv: float | None,
        provenance: dict[str, Any],
    ) -> LatencyResult:
        """A `LatencyResult` of timed bytes, with this source's `warmup_runs` and `threads`."""
        return LatencyResult(
            median_ms=median_ms,
            mean_ms=mean_ms,
            p90_ms=p90_ms,
            std_ms=std_ms,
            cv=std_ms / mean_ms if mean_ms > 0 else 0.0,
            runs=runs,
            warmup_runs=self.warmup_runs,
            threads=self.threads,
            source=source,
            quantization=quantization,
            tflite_bytes=len(tflite_bytes),
            sha256=hashlib.sha256(tflite_bytes).hexdigest(),
            provenance=provenance,
            robust_cv=robust_cv,
        )

    # ----------------------------------------------------------------------------------------------
    # Caching.

    def cache_environment(self) -> dict[str, Any]:
        """Facts outside `config()` that change a figure: by default, the converter's version.

        Part of every cache key. A source that times on this machine adds the machine (see `HostLatency`).

        Example:

        ```python
        source.cache_environment()  # {"tensorflow": "2.18.0"}
        ```
        """
        return {"tensorflow": package_version("tensorflow", "tensorflow")}

    def cache_key(self, model, *, quantization: str = "float32", representative_data=None) -> str:
        """The key `measure` caches the figure of this model under (a SHA-256 hex digest).

        Raises:
            ValueError: when the model's config cannot be serialised (such models are not cached).

        Example:

        ```python
        source = HostLatency()
        source.cache_key(model) == source.cache_key(model)  # True
        ```
        """
        specs, batches = self._specs_and_batches(model, quantization, representative_data)
        key = self._cache_key(model, specs, quantization, batches)
        if key is None:
            raise ValueError(
                f"Model {getattr(model, 'name', model)!r} has no JSON-serialisable config, so its "
                "latency cannot be cached."
            )
        return key

    def _specs_and_batches(self, model, quantization: str, representative_data):
        """The model's input specs, and for int8 its calibration batches (else `None`)."""
        check_choice("quantization", quantization, QUANTIZATIONS)
        specs = tflite_lib.model_input_specs(model)
        if quantization != "int8":
            return specs, None
        # Materialised once: they are both fingerprinted and fed to the converter.
        return specs, tflite_lib.calibration_batches(
            representative_data, specs, num_samples=self.calibration_samples
        )

    def _cache_key(self, model, specs, quantization, batches) -> str | None:
        try:
            config = json.dumps(
                {
                    "class": f"{type(model).__module__}.{type(model).__qualname__}",
                    "config": model.get_config(),
                },
                sort_keys=True,
                default=_json_default,
            )
        except (NotImplementedError, TypeError, ValueError) as e:
            logger.debug("Not caching the latency of %r: %s", getattr(model, "name", model), e)
            return None
        h = hashlib.sha256()
        # The environment first: finding it may settle a setting `config()` reports (a phone's serial).
        environment = self.cache_environment()
        header = {
            "format": _CACHE_FORMAT,
            "source": self.config(),
            "environment": environment,
            "quantization": quantization,
            "inputs": [[list(shape), dtype] for shape, dtype in specs],
        }
        h.update(json.dumps(header, sort_keys=True, default=_json_default).encode())
        h.update(config.encode())
        for weight in model.weights:
            array = np.ascontiguousarray(np.asarray(weight))
            path = getattr(weight, "path", weight.name)
            h.update(f"|{path}|{array.dtype}|{array.shape}|".encode())
            h.update(array.tobytes())
        if batches is not None:
            h.update(b"|calibration|")
            for batch in batches:
                for array in batch:
                    array = np.ascontiguousarray(array)
                    h.update(f"|{array.dtype}|{array.shape}|".encode())
                    h.update(array.tobytes())
        return h.hexdigest()

    def _lookup(self, key: str) -> LatencyResult | None:
        with self._cache_lock:
            if key in self._cache:
                return self._cache[key]
            if self.cache_dir is None:
                return None
            path = os.path.join(self.cache_dir, f"{key}.json")
            try:
                with open(path, encoding="utf-8") as f:
                    record = json.load(f)
                if record.get("format") != _CACHE_FORMAT or record.get("key") != key:
                    return None
                result = LatencyResult.from_dict(record["result"])
            except FileNotFoundError:
                return None
            except (OSError, ValueError, KeyError, TypeError) as e:
                logger.warning("Ignoring unreadable latency cache file %s: %s", path, e)
                return None
            self._cache[key] = result
            return result

    def _remember(self, key: str | None, result: LatencyResult) -> None:
        if key is None:
            return
        with self._cache_lock:
            self._cache[key] = result
            if self.cache_dir is None:
                return
            record = {"format": _CACHE_FORMAT, "key": key, "result": result.to_dict()}
            atomic_write_json(os.path.join(self.cache_dir, f"{key}.json"), record)


def _json_default(value):
    # Numpy scalars and arrays can appear in layer configs; anything else is not a stable key.
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return {"ndarray": value.tolist(), "dtype": str(value.dtype)}
    raise TypeError(f"Object of type {type(value).__name__} in the model config is not serialisable.")


def package_version(module_name: str, distribution: str) -> str:
    """The version of an installed package: its module's `__version__` if imported, else its metadata.

    Returns `"unknown"` rather than failing a measurement when neither is available.

    Example:

    ```python
    package_version("numpy", "numpy")  # e.g. "2.1.3"
    ```
    """
    module = sys.modules.get(module_name)
    version = getattr(module, "__version__", None)
    if version:
        return str(version)
    try:
        from importlib import metadata

        return metadata.version(distribution)
    except Exception:  # Not installed or no metadata: record that rather than fail a measurement.
        return "unknown"
