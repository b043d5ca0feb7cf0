"""Latency measured on this machine's CPU with the LiteRT interpreter."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import sys
import threading
import time
from typing import Any

import numpy as np

from keras_mnas.latency import tflite as tflite_lib
from keras_mnas.latency.base import QUANTIZATIONS, LatencyResult, LatencySource, check_seconds, percentile_cv
from keras_mnas.utils.io import atomic_write_json

logger = logging.getLogger(__name__)

# Bumped whenever what a cached figure means changes, so stale disk caches are ignored.
_CACHE_FORMAT = 1

# Timing two models at once on a small machine makes both figures wrong: time one at a time.
_TIMING_LOCK = threading.Lock()


class HostLatency(LatencySource):
    """Times TFLite models on the host CPU with the LiteRT interpreter.

    The model is converted with `convert_to_tflite`, loaded in an
    `ai_edge_litert.interpreter.Interpreter` with `threads` threads and LiteRT's default XNNPACK
    delegate, run `warmup_runs` times untimed and then timed (each `invoke()` with
    `time.perf_counter_ns`) on a fixed random input, at least `runs` times and for at least
    `min_seconds` in all, like `benchmark_model`'s `--num_runs` and `--min_secs`: a single layer of a
    few microseconds is then timed over thousands of invocations, not over a few milliseconds that one
    hiccup of the machine can cover. The median is the figure. With `repeats > 1`
    the whole thing is done in `repeats` fresh interpreters and the median of their medians is
    reported, which also averages out a badly placed interpreter; the default, 1, is the fastest.
    On a quiet 2-core host the defaults (10 warm-up, 50 timed runs) gave a coefficient of variation of
    about 1.5-3.5% for MobileNet-sized models; on a noisy virtual machine most figures spread by more
    than 5% even when it is idle (docs/latency.md, "How far a host figure repeats"). The result's
    `robust_cv` is the spread of the middle 90% of all timed runs; `unstable` judges it rather than `cv`,
    which over thousands of runs of a small model a few pre-empted runs dominate. The first unstable
    figure of a source is logged as a warning, later ones at INFO level.

    Results are cached in memory, and on disk when `cache_dir` is given (one JSON file per result,
    written atomically). A cached figure is reused only when all of these match: the model's
    config (`model.get_config()`, layer names included), its input shapes and dtypes, the bytes of
    all its weights, the quantization, the calibration data (int8 only), this source's `config()`
    (threads, runs, warm-ups, repeats, conversion method, calibration samples), and the host
    (CPU model, machine, LiteRT and TensorFlow versions). The key is computed before conversion,
    so a hit costs neither conversion nor timing. Models whose config cannot be serialised are
    measured every time.

    Args:
        threads: Interpreter threads (1 by default, like the MnasNet paper's single big core).
        runs: Timed runs per repeat, at least.
        min_seconds: Timed runs continue past `runs` until they add up to this many seconds, per repeat
            (0: exactly `runs`).
        warmup_runs: Untimed runs before timing, per repeat.
        repeats: Fresh interpreters to time in; the reported median is the median of medians.
        cache_dir: Optional directory for the on-disk result cache (created when needed).
        conversion: The `convert_to_tflite` method, `"concrete_function"` or `"saved_model"`.
        calibration_samples: Samples of a representative array used for int8 calibration.
        seed: Seed of the random input.

    Example:

    ```python
    source = HostLatency(cache_dir="~/.cache/keras_mnas/latency")
    result = source.measure(keras.applications.MobileNetV2(weights=None))
    print(f"{result.median_ms:.2f} ms (cv {result.cv:.1%})")
    ```
    """

    name = "host"

    def __init__(
        self,
        *,
        threads: int = 1,
        runs: int = 50,
        warmup_runs: int = 10,
        repeats: int = 1,
        min_seconds: float = 0.1,
        cache_dir: str | os.PathLike | None = None,
        conversion: str = "concrete_function",
        calibration_samples: int = tflite_lib.DEFAULT_CALIBRATION_SAMPLES,
        seed: int = 0,
    ):
        for arg, value, minimum in (
            ("threads", threads, 1),
            ("runs", runs, 1),
            ("warmup_runs", warmup_runs, 0),
            ("repeats", repeats, 1),
            ("calibration_samples", calibration_samples, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"`{arg}` must be an integer >= {minimum}; received {value!r}.")
        check_seconds("min_seconds", min_seconds, allow_zero=True)
        if conversion not in tflite_lib.CONVERSION_METHODS:
            raise ValueError(
                f"`conversion` must be one of {tflite_lib.CONVERSION_METHODS}; received {conversion!r}."
            )
        self.threads = threads
        self.runs = runs
        self.warmup_runs = warmup_runs
        self.repeats = repeats
        self.min_seconds = float(min_seconds)
        self.conversion = conversion
        self.calibration_samples = calibration_samples
        self.seed = seed
        self.cache_dir = os.path.abspath(os.path.expanduser(os.fspath(cache_dir))) if cache_dir else None
        self._cache: dict[str, LatencyResult] = {}
        self._lock = threading.Lock()

    def config(self) -> dict[str, Any]:
        """The settings that change the measured figure; part of every cache key.

        Example:

        ```python
        HostLatency(runs=100).config()["runs"]  # 100
        ```
        """
        return {
            **super().config(),
            "threads": self.threads,
            "runs": self.runs,
            "warmup_runs": self.warmup_runs,
            "repeats": self.repeats,
            "min_seconds": self.min_seconds,
            "conversion": self.conversion,
            "calibration_samples": self.calibration_samples,
            "seed": self.seed,
        }

    # ----------------------------------------------------------------------------------------------
    # Measuring.

    def measure(self, model, *, quantization: str = "float32", representative_data=None) -> LatencyResult:
        """Converts a Keras model to TFLite and times it, or returns the cached figure.

        Args:
            model: A built Keras model with a fully defined input shape (batch size aside).
            quantization: `"float32"` or `"int8"` (full-integer post-training quantization).
            representative_data: For int8: an array of input samples, or a callable returning an
                iterable of input batches (called once per measurement, to fingerprint and
                calibrate). Ignored for float32.

        Returns:
            A `LatencyResult`; `provenance["cache_key"]` is the key it is cached under.

        Raises:
            ValueError: for an undefined input shape, an unknown quantization, int8 without data.
            RuntimeError: when conversion fails or LiteRT cannot run the converted model.

        Example:

        ```python
        result = HostLatency().measure(model, quantization="int8", representative_data=images)
        ```
        """
        batches, key = self._batches_and_key(model, quantization, representative_data)
        if key is not None:
            cached = self._lookup(key)
            if cached is not None:
                return cached

        start = time.perf_counter()
        tflite_bytes = tflite_lib.convert_to_tflite(
            model,
            quantization=quantization,
            representative_data=(lambda: iter(batches)) if batches is not None else None,
            method=self.conversion,
            calibration_samples=self.calibration_samples,
        )
        conversion_seconds = time.perf_counter() - start
        result = self.measure_tflite(
            tflite_bytes,
            quantization=quantization,
            extra_provenance={
                "model": getattr(model, "name", type(model).__name__),
                "conversion": self.conversion,
                "conversion_seconds": round(conversion_seconds, 3),
                **({"cache_key": key} if key is not None else {}),
            },
        )
        if key is not None:
            self._store(key, result)
        return result

    def measure_tflite(
        self,
        tflite_bytes: bytes,
        *,
        quantization: str = "float32",
        extra_provenance: dict[str, Any] | None = None,
    ) -> LatencyResult:
        """Times a TFLite flatbuffer as it is (no cache).

        Args:
            tflite_bytes: The model, e.g. read from a `.tflite` file.
            quantization: What the model is, recorded in the result: `"float32"` or `"int8"`.
            extra_provenance: Extra facts recorded in `provenance`.

        Returns:
            A `LatencyResult` with the median of `runs` timed invokes (median of the per-repeat
            medians when `repeats > 1`).

        Raises:
            ValueError: for bytes that are not a TFLite model, or a model whose input has undefined
                (dynamic) dimensions other than the batch.
            RuntimeError: when LiteRT cannot allocate or run the model (e.g. XNNPACK "failed to
                reshape runtime"): no figure is made up for a broken model.

        Example:

        ```python
        with open("model.tflite", "rb") as f:
            print(HostLatency().measure_tflite(f.read()).median_ms)
        ```
        """
        _check_quantization(quantization)
        if isinstance(tflite_bytes, (bytearray, memoryview)):
            tflite_bytes = bytes(tflite_bytes)
        all_times = []
        medians = []
        with _TIMING_LOCK:
            for _ in range(self.repeats):
                times_ns = self._time_once(tflite_bytes)
                all_times.append(times_ns)
                medians.append(float(np.median(times_ns)) / 1e6)
        times_ms = np.concatenate(all_times).astype(np.float64) / 1e6
        median = float(np.median(medians))
        mean = float(np.mean(times_ms))
        std = float(np.std(times_ms, ddof=1)) if times_ms.size > 1 else 0.0
        if median <= 0:
            raise RuntimeError(
                f"The timer measured a non-positive median latency ({median} ms) over "
                f"{times_ms.size} runs; the model does no measurable work."
            )
        provenance = {
            **host_provenance(),
            "repeats": self.repeats,
            "per_repeat_median_ms": medians,
            "delegate": "LiteRT default (XNNPACK)",
            "timer": "time.perf_counter_ns per invoke()",
            **(extra_provenance or {}),
        }
        p5, pooled_median, p90, p95 = (float(v) for v in np.percentile(times_ms, [5, 50, 90, 95]))
        result = LatencyResult(
            median_ms=median,
            mean_ms=mean,
            p90_ms=p90,
            std_ms=std,
            cv=std / mean if mean > 0 else 0.0,
            runs=int(times_ms.size),
            warmup_runs=self.warmup_runs,
            threads=self.threads,
            source=self.name,
            quantization=quantization,
            tflite_bytes=len(tflite_bytes),
            sha256=hashlib.sha256(tflite_bytes).hexdigest(),
            provenance=provenance,
            robust_cv=percentile_cv(p5, pooled_median, p95) if pooled_median > 0 else None,
        )
        if result.unstable:
            # Another process competing for the cores, or a noisy host: on a 2-core VM figures move by
            # several per cent between measurements even when idle, tiny models most
            # (benchmarks/latency_repeatability.py). The figure is still returned, flagged.
            logger.log(
                self._unstable_log_level(),
                "Unstable latency measurement: median %.4f ms, the middle 90%% of %d runs spreading like a "
                "coefficient of variation of %.1f%% (plain cv %.1f%%); is the host busy, or its timing noisy "
                "(tiny models, virtual machines)? See docs/latency.md.",
                result.median_ms,
                result.runs,
                100 * result.spread,
                100 * result.cv,
            )
        return result

    def _time_once(self, tflite_bytes: bytes) -> np.ndarray:
        interpreter = tflite_lib.load_interpreter(tflite_bytes, num_threads=self.threads)
        inputs = interpreter.get_input_details()
        for detail in inputs:
            signature = [int(d) for d in detail["shape_signature"]]
            if any(d < 0 for d in signature[1:]):
                raise ValueError(
                    f"Cannot time a TFLite model whose input {detail['name']!r} has undefined "
                    f"dimensions: shape signature {signature}. LiteRT would run it at the "
                    f"placeholder shape {[int(d) for d in detail['shape']]} and report a "
                    "meaningless figure. Convert the model with a fixed input shape (batch size "
                    "aside)."
                )
        try:
            interpreter.allocate_tensors()
            rng = np.random.default_rng(self.seed)
            for detail in inputs:
                interpreter.set_tensor(detail["index"], _random_input(rng, detail["shape"], detail["dtype"]))
            for _ in range(self.warmup_runs):
                interpreter.invoke()
            times = []
            clock = time.perf_counter_ns
            invoke = interpreter.invoke
            deadline = clock() + int(self.min_seconds * 1e9)
            while len(times) < self.runs or clock() < deadline:
                start = clock()
                invoke()
                times.append(clock() - start)
        except (RuntimeError, ValueError) as e:
            raise RuntimeError(
                f"LiteRT could not run the TFLite model ({len(tflite_bytes)} bytes) with "
                f"{self.threads} thread(s): {e}"
            ) from e
        return np.asarray(times, dtype=np.int64)

    # ----------------------------------------------------------------------------------------------
    # Caching.

    def cache_key(self, model, *, quantization: str = "float32", representative_data=None) -> str:
        """The key `measure` caches the result of this model under (a SHA-256 hex digest).

        Raises `ValueError` when the model's config cannot be serialised (such models are not
        cached).

        Example:

        ```python
        source = HostLatency()
        source.cache_key(model) == source.cache_key(model)  # True
        ```
        """
        _, key = self._batches_and_key(model, quantization, representative_data)
        if key is None:
            raise ValueError(
                f"Model {getattr(model, 'name', model)!r} has no JSON-serialisable config, so its "
                "latency cannot be cached."
            )
        return key

    def _batches_and_key(self, model, quantization, representative_data):
        """The int8 calibration batches (or None) and the cache key (None when uncacheable)."""
        _check_quantization(quantization)
        specs = tflite_lib.model_input_specs(model)
        batches = None
        if quantization == "int8":
            # Materialised once: it is both fingerprinted and fed to the converter.
            batches = tflite_lib.calibration_batches(
                representative_data, specs, num_samples=self.calibration_samples
            )
        return batches, self._cache_key(model, specs, quantization, batches)

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
        header = {
            "format": _CACHE_FORMAT,
            "source": self.config(),
            "host": _host_fingerprint(),
            "quantization": quantization,
            "inputs": [[list(shape), dtype] for shape, dtype in specs],
        }
        h.update(json.dumps(header, sort_keys=True).encode())
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
        with self._lock:
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

    def _store(self, key: str, result: LatencyResult) -> None:
        with self._lock:
            self._cache[key] = result
            if self.cache_dir is None:
                return
            record = {"format": _CACHE_FORMAT, "key": key, "result": result.to_dict()}
            atomic_write_json(os.path.join(self.cache_dir, f"{key}.json"), record)


def _check_quantization(quantization: str) -> None:
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"`quantization` must be one of {QUANTIZATIONS}; received {quantization!r}.")


def _json_default(value):
    # Numpy scalars and arrays can appear in layer configs; anything else is not a stable key.
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return {"ndarray": value.tolist(), "dtype": str(value.dtype)}
    raise TypeError(f"Object of type {type(value).__name__} in the model config is not serialisable.")


def _random_input(rng: np.random.Generator, shape, dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    shape = tuple(int(d) for d in shape)
    if np.issubdtype(dtype, np.floating):
        return rng.random(shape, dtype=np.float32).astype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    raise ValueError(f"Cannot make a random input of dtype {dtype}; expected a numeric or bool input.")


_HOST_CACHE: dict[str, Any] = {}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Hardware", "Processor", "cpu model"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _package_version(module_name: str, distribution: str) -> str:
    module = sys.modules.get(module_name)
    version = getattr(module, "__version__", None)
    if version:
        return str(version)
    try:
        from importlib import metadata

        return metadata.version(distribution)
    except Exception:  # Not installed or no metadata: record that rather than fail a measurement.
        return "unknown"


def host_provenance() -> dict[str, Any]:
    """Facts about this host and the software that times the models (computed once per process).

    Example:

    ```python
    host_provenance()["cpu"]  # e.g. "AMD EPYC 7B13"
    ```
    """
    if not _HOST_CACHE:
        import ai_edge_litert

        _HOST_CACHE.update(
            {
                "platform": platform.platform(),
                "machine": platform.machine(),
                "cpu": _cpu_model(),
                "cpu_count": os.cpu_count(),
                "python": platform.python_version(),
                "litert": _package_version(ai_edge_litert.__name__, "ai-edge-litert"),
                "tensorflow": _package_version("tensorflow", "tensorflow"),
                "keras": _package_version("keras", "keras"),
                "numpy": np.__version__,
            }
        )
    return dict(_HOST_CACHE)


def _host_fingerprint() -> dict[str, Any]:
    # What makes a figure measured here meaningless elsewhere (a disk cache may be shared).
    p = host_provenance()
    return {k: p[k] for k in ("machine", "cpu", "cpu_count", "litert", "tensorflow")}
