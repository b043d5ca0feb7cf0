"""Latency measured on this machine's CPU with the LiteRT interpreter."""

from __future__ import annotations

import logging
import os
import platform
import threading
import time
from typing import Any

import numpy as np

from keras_mnas import tflite as tflite_lib
from keras_mnas.latency.base import (
    QUANTIZATIONS,
    LatencyResult,
    TFLiteLatencySource,
    package_version,
    percentile_cv,
    validate_tflite,
)
from keras_mnas.utils.checks import check_choice, check_int, check_seconds

logger = logging.getLogger(__name__)

# Timing two models at once on a small machine makes both figures wrong: time one at a time.
_TIMING_LOCK = threading.Lock()


class HostLatency(TFLiteLatencySource):
    """Times TFLite models on the host CPU with the LiteRT interpreter.

    The model is converted with `convert_to_tflite`, loaded in an
    `ai_edge_litert.interpreter.Interpreter` with `threads` threads and LiteRT's default XNNPACK
    delegate, run `warmup_runs` times untimed and then timed (each `invoke()` with
    `time.perf_counter_ns`) on a fixed random input, at least `runs` times and for at least
    `min_seconds` in all, like `benchmark_model`'s `--num_runs` and `--min_secs`: a single layer of a
    few microseconds is then timed over thousands of invocations, not over a few milliseconds that one
    hiccup of the machine can cover. The median is the figure. With `repeats > 1` the whole thing is done
    in `repeats` fresh interpreters and the median of their medians is reported, which also averages out a
    badly placed interpreter; the default, 1, is the fastest. The result's `robust_cv` is the spread of the
    middle 90% of all timed runs; `unstable` judges it rather than `cv`, which over thousands of runs of a
    small model a few pre-empted runs dominate. The first unstable figure of a source is logged as a
    warning, later ones at INFO level. How far host figures repeat is in docs/benchmarks.md.

    `measure` converts and caches as every `TFLiteLatencySource` does. Figures are cached by default, in
    memory, and on disk when `cache_dir` is given: a figure is reused only when the model (config, weights,
    input shapes), the quantization and calibration data, this source's `config()` and the host (CPU model,
    machine, LiteRT and TensorFlow versions) all match, so a hit costs neither conversion nor timing.

    Args:
        threads: Interpreter threads (1 by default, like the MnasNet paper's single big core).
        runs: Timed runs per repeat, at least.
        min_seconds: Timed runs continue past `runs` until they add up to this many seconds, per repeat
            (0: exactly `runs`).
        warmup_runs: Untimed runs before timing, per repeat.
        repeats: Fresh interpreters to time in; the reported median is the median of medians.
        cache: Whether to reuse the figures of identical models (on by default).
        cache_dir: Optional directory for the on-disk result cache (created when needed).
        conversion: The `convert_to_tflite` method, `"concrete_function"` or `"saved_model"`.
        calibration_samples: Samples of a representative array used for int8 calibration.
        seed: Seed of the random input.

    Example:

    ```python
    source = HostLatency(cache_dir="~/.cache/keras_mnas/latency")
    result = source.measure(keras.applications.MobileNetV2(weights=None))
    print(f"{result.median_ms:.2f} ms (spread {result.spread:.1%})")
    ```
    """

    name = "host"
    cache_by_default = True

    def __init__(
        self,
        *,
        threads: int = 1,
        runs: int = 50,
        warmup_runs: int = 10,
        repeats: int = 1,
        min_seconds: float = 0.1,
        cache: bool | None = None,
        cache_dir: str | os.PathLike | None = None,
        conversion: str = "concrete_function",
        calibration_samples: int = tflite_lib.DEFAULT_CALIBRATION_SAMPLES,
        seed: int = 0,
    ):
        super().__init__(cache=cache, cache_dir=cache_dir)
        self.threads = check_int("threads", threads, minimum=1)
        self.runs = check_int("runs", runs, minimum=1)
        self.warmup_runs = check_int("warmup_runs", warmup_runs, minimum=0)
        self.repeats = check_int("repeats", repeats, minimum=1)
        self.calibration_samples = check_int("calibration_samples", calibration_samples, minimum=1)
        self.min_seconds = check_seconds("min_seconds", min_seconds, allow_zero=True)
        self.conversion = check_choice("conversion", conversion, tflite_lib.CONVERSION_METHODS)
        self.seed = seed

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

    def cache_environment(self) -> dict[str, Any]:
        """The host a figure was measured on: machine, CPU, core count, LiteRT and TensorFlow versions.

        Part of every cache key, since a disk cache may be shared between machines.

        Example:

        ```python
        HostLatency().cache_environment()["cpu"]  # e.g. "AMD EPYC 7B13"
        ```
        """
        return _host_fingerprint()

    # ----------------------------------------------------------------------------------------------
    # Measuring.

    def measure_tflite(
        self,
        tflite_bytes: bytes,
        *,
        quantization: str = "float32",
        extra_provenance: dict[str, Any] | None = None,
    ) -> LatencyResult:
        """Times a TFLite flatbuffer as it is (never cached).

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
        check_choice("quantization", quantization, QUANTIZATIONS)
        tflite_bytes = validate_tflite(tflite_bytes)
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
        result = self._tflite_result(
            tflite_bytes,
            quantization=quantization,
            source=self.name,
            median_ms=median,
            mean_ms=mean,
            p90_ms=p90,
            std_ms=std,
            runs=int(times_ms.size),
            robust_cv=percentile_cv(p5, pooled_median, p95) if pooled_median > 0 else None,
            provenance=provenance,
        )
        # Another process competing for the cores, or a noisy host (a small VM moves figures by several per
        # cent even when idle, tiny models most): the figure is still returned, flagged.
        self._log_if_unstable(
            result,
            "Unstable latency measurement: median %.4f ms, spread %.1f%% over %d runs (above 5%%); is the "
            "host busy, or its timing noisy (tiny models, virtual machines)? The keras-mnas documentation's "
            "Latency page says how far a host figure repeats.",
            result.median_ms,
            100 * result.spread,
            result.runs,
        )
        return result

    def _time_once(self, tflite_bytes: bytes) -> np.ndarray:
        interpreter = tflite_lib.load_interpreter(tflite_bytes, num_threads=self.threads)
        inputs = interpreter.get_input_details()
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
                "litert": package_version(ai_edge_litert.__name__, "ai-edge-litert"),
                "tensorflow": package_version("tensorflow", "tensorflow"),
                "keras": package_version("keras", "keras"),
                "numpy": np.__version__,
            }
        )
    return dict(_HOST_CACHE)


def _host_fingerprint() -> dict[str, Any]:
    # What makes a figure measured here meaningless elsewhere (a disk cache may be shared).
    p = host_provenance()
    return {k: p[k] for k in ("machine", "cpu", "cpu_count", "litert", "tensorflow")}
