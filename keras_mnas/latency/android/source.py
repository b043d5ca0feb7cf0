"""`AndroidLatency`: times TFLite models on one Android phone with `benchmark_model`, through adb.

The measurement loop only: conversion and caching come from `TFLiteLatencySource`, the adb transport from
`keras_mnas.latency.android.adb`, the lease from `keras_mnas.latency.android.lease`.

Example:

```python
source = AndroidLatency("R5CT1234ABC", binary="android_aarch64_benchmark_model")
print(source.measure(model).median_ms)
```
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import math
import os
import re
import shlex
import socket
import stat
import statistics
import threading
import time
from collections.abc import Sequence
from typing import Any

from keras_mnas import tflite as tflite_lib
from keras_mnas.latency.android.adb import DEFAULT_ADB_HOST, DEFAULT_ADB_PORT, Phone, describe, only_serial
from keras_mnas.latency.android.device import (
    PREBUILT_NAMES,
    AndroidDeviceInfo,
    ThermalState,
    abi_compatible,
    describe_thermal,
    elf_abi,
    int_or_none,
    soc_name,
)
from keras_mnas.latency.android.lease import DEFAULT_REMOTE_DIR, Lease
from keras_mnas.latency.base import (
    QUANTIZATIONS,
    LatencyResult,
    TFLiteLatencySource,
    percentile_cv,
    validate_tflite,
)
from keras_mnas.latency.benchmark_model import BenchmarkOutput, parse_benchmark_output
from keras_mnas.latency.errors import (
    BenchmarkError,
    DeviceBusyError,
    DeviceError,
    DeviceTooHotError,
    LatencyMeasurementError,
    SetupError,
)
from keras_mnas.utils.checks import check_choice, check_int, check_seconds

logger = logging.getLogger(__name__)

#: How the model may be accelerated: `"xnnpack"` (the CPU with XNNPACK, TFLite's default), `"none"` (the
#: plain CPU kernels), `"gpu"` (the GPU delegate) or `"nnapi"` (Android's NNAPI).
DELEGATES = ("xnnpack", "none", "gpu", "nnapi")

_REMOTE_BINARY = "keras_mnas_benchmark_model"
_REMOTE_MODEL = "keras_mnas_model.tflite"


def _normalize_mask(core_mask) -> str | None:
    if core_mask is None or core_mask == "none":
        return None
    if core_mask == "auto":
        return "auto"
    if isinstance(core_mask, int) and not isinstance(core_mask, bool):
        if core_mask <= 0:
            raise ValueError(f"`core_mask` must select at least one CPU; received {core_mask!r}.")
        return format(core_mask, "x")
    if isinstance(core_mask, str):
        text = core_mask.lower().removeprefix("0x")
        if re.fullmatch(r"[0-9a-f]+", text) and int(text, 16) > 0:
            return text
    raise ValueError(
        "`core_mask` must be 'auto' (the fastest core(s) from cpufreq), None (no pinning), a positive int "
        f"or a hex string such as 'f0'; received {core_mask!r}."
    )




class AndroidLatency(TFLiteLatencySource):
    """Times TFLite models on one Android phone with TFLite's `benchmark_model`, through adb.

    For each measurement: the phone must be listed as `device` by the adb server; the `benchmark_model`
    binary (checked against the phone's ABI) and the model are pushed to `remote_dir` unless the phone already
    has the same bytes (SHA-256 compared on the phone); then, `repeats` times, in a fresh process each time,
    after the phone has cooled down:

    `taskset MASK benchmark_model --graph=MODEL --num_threads=T --warmup_runs=W --warmup_min_secs=0
    --num_runs=R --min_secs=S --use_xnnpack=...`

    with every argument shell-quoted. `MASK` pins the process to the `threads` fastest CPUs (highest
    `cpuinfo_max_freq`; among equals the highest-numbered), unless `core_mask` says otherwise. Each
    process's figure is the median of its runs when the tool prints percentiles (LiteRT), else their mean;
    the result's `median_ms` is the median over the processes. `mean_ms`, `std_ms` and `cv` pool all runs
    of all processes (so a process that ran slower counts). When the tool prints percentiles, `robust_cv` is
    the larger of the widest per-process 5th-95th percentile spread and the spread between the processes'
    figures; `unstable` flags it above 5% (`cv` when the tool prints no percentiles). benchmark_model
    prints no 90th percentile, so `p90_ms` holds the highest per-process 95th
    percentile when printed, else the highest per-process maximum: an upper bound of the 90th percentile,
    never an underestimate. The first unstable figure of a source is logged as a warning, later ones at INFO
    level.

    Before each process the phone must be at or below `max_thermal_status` (`dumpsys thermalservice`),
    or, on phones without the thermal service, its hottest CPU thermal zone at or below
    `max_temperature_c`; it is polled every `cool_poll_s` for up to `max_cool_wait_s`, then
    `DeviceTooHotError` is raised.

    Every adb call must finish within `call_timeout_s` (pushes get extra time per byte) and every
    benchmark process within `run_timeout_s`, wall-clock; otherwise `DeadlineExceededError`.

    With `lease=True` (default) the phone is leased for the whole measurement (see the module doc): other
    workers using keras-mnas, in this process or on other machines, wait for it (up to `lease_wait_s`, then
    `DeviceBusyError`). A worker that dies leaves a lease that expires after `lease_ttl_s` (default: the
    run deadline plus two call deadlines plus a minute; it is renewed before each process). Before each
    process the phone is also checked for a still-running benchmark_model left by such a worker.

    `measure` converts the model once and caches as every `TFLiteLatencySource` does, but a phone caches
    nothing unless asked: by default every `measure` runs on the phone, because a user measuring on a phone
    expects the phone to run the model. With `cache=True` (in memory) or a `cache_dir` (also on disk), a
    figure is reused for a model with the same config, weights, input shapes, quantization and calibration
    data, measured with the same `config()` (serial, binary, timing and thermal settings) and converter
    version. `measure_tflite` never caches.

    Args:
        serial: The phone's adb serial (`adb devices`); `None` uses the only phone the server lists.
        binary: Path of the `benchmark_model` executable built for the phone's ABI (see docs/phones.md).
        adb_host: Host of the adb server the phone is plugged into (this machine by default).
        adb_port: Port of that adb server.
        threads: `--num_threads` (1 by default, like the MnasNet paper's single big core).
        core_mask: `"auto"` (the `threads` fastest cores), `None` (no `taskset`), or a CPU mask as an int or
            a hex string such as `"80"`.
        runs: `--num_runs` per process: timed runs, at least.
        warmup_runs: `--warmup_runs` per process.
        min_seconds: `--min_secs` per process: timed runs continue past `runs` until they add up to this
            many seconds, so a single layer of a few microseconds is not timed over a few milliseconds only.
        repeats: Fresh benchmark processes per measurement.
        delegate: One of `DELEGATES`.
        extra_flags: More `--flag=value` arguments for benchmark_model.
        max_thermal_status: The highest acceptable `Thermal Status` (0: none).
        max_temperature_c: The highest acceptable CPU temperature when only thermal zones are available.
        max_cool_wait_s: How long to wait for the phone to cool before each process.
        cool_poll_s: Seconds between thermal readings while waiting.
        call_timeout_s: Total deadline of each adb call.
        run_timeout_s: Total deadline of each benchmark process.
        lease: Whether to lease the phone for each measurement.
        lease_ttl_s: How long a lease stays valid without renewal.
        lease_wait_s: How long to wait for a phone another worker is using.
        remote_dir: Where files and the lease go on the phone.
        conversion: The `convert_to_tflite` method for `measure`.
        calibration_samples: Samples of a representative array used for int8 calibration.
        cache: Whether `measure` reuses the figures of identical models (off by default, see above).
        cache_dir: Optional directory for an on-disk result cache; implies `cache=True`.
        op_profile: Whether to run benchmark_model with `--enable_op_profiling=true` and record the
            per-operator times in the result's `provenance["op_profile"]`: `{"by_type": {type: ms},
            "by_node": {name: {"node_type", "avg_ms", "times_called"}}, "delegate_by_type": ...,
            "delegate_by_node": ...}`, each time the median over the processes. Profiling adds a little
            overhead to every operator, so the figure of a profiled measurement is slightly higher.

    Raises:
        SetupError: if `binary` is missing or not an Android executable.
        ValueError: for invalid settings.

    Example:

    ```python
    source = AndroidLatency("R5CT1234ABC", binary="android_aarch64_benchmark_model", repeats=5)
    result = source.measure(keras_mnas.applications.MnasNetA1(weights=None))
    print(f"{result.median_ms:.1f} ms, cv {result.cv:.1%}, {result.provenance['soc']}")
    ```
    """

    name = "android"

    def __init__(
        self,
        serial: str | None = None,
        *,
        binary: str | os.PathLike,
        adb_host: str = DEFAULT_ADB_HOST,
        adb_port: int = DEFAULT_ADB_PORT,
        threads: int = 1,
        core_mask: str | int | None = "auto",
        runs: int = 50,
        warmup_runs: int = 10,
        min_seconds: float = 0.1,
        repeats: int = 3,
        delegate: str = "xnnpack",
        extra_flags: Sequence[str] = (),
        max_thermal_status: int = 0,
        max_temperature_c: float = 45.0,
        max_cool_wait_s: float = 300.0,
        cool_poll_s: float = 5.0,
        call_timeout_s: float = 30.0,
        run_timeout_s: float = 300.0,
        lease: bool = True,
        lease_ttl_s: float | None = None,
        lease_wait_s: float = 600.0,
        remote_dir: str = DEFAULT_REMOTE_DIR,
        conversion: str = "concrete_function",
        calibration_samples: int = tflite_lib.DEFAULT_CALIBRATION_SAMPLES,
        cache: bool | None = None,
        cache_dir: str | os.PathLike | None = None,
        op_profile: bool = False,
    ):
        super().__init__(cache=cache, cache_dir=cache_dir)
        if not isinstance(op_profile, bool):
            raise ValueError(f"`op_profile` must be True or False; received {op_profile!r}.")
        check_int("threads", threads, minimum=1)
        check_int("runs", runs, minimum=1)
        check_int("warmup_runs", warmup_runs, minimum=1)
        check_int("repeats", repeats, minimum=1)
        check_int("max_thermal_status", max_thermal_status, minimum=0)
        check_int("calibration_samples", calibration_samples, minimum=1)
        check_int("adb_port", adb_port, minimum=1)
        for arg in ("min_seconds", "max_cool_wait_s", "lease_wait_s"):
            check_seconds(arg, locals()[arg], allow_zero=True)
        for arg in ("cool_poll_s", "call_timeout_s", "run_timeout_s"):
            check_seconds(arg, locals()[arg])
        check_seconds("lease_ttl_s", lease_ttl_s, allow_none=True)
        check_choice("delegate", delegate, DELEGATES)
        check_choice("conversion", conversion, tflite_lib.CONVERSION_METHODS)
        extra_flags = tuple(str(f) for f in extra_flags)
        for flag in extra_flags:
            if not re.fullmatch(r"--[A-Za-z0-9_]+=.*", flag):
                raise ValueError(f"`extra_flags` must be '--name=value' strings; received {flag!r}.")
        if not remote_dir.startswith("/") or remote_dir != remote_dir.rstrip("/"):
            raise ValueError(
                f"`remote_dir` must be an absolute path without a trailing '/'; received {remote_dir!r}."
            )
        if serial is not None and (not isinstance(serial, str) or not serial):
            raise ValueError(f"`serial` must be a non-empty string or None; received {serial!r}.")

        self.binary_path = os.path.abspath(os.path.expanduser(os.fspath(binary)))
        try:
            with open(self.binary_path, "rb") as f:
                self._binary = f.read()
        except FileNotFoundError:
            raise SetupError(
                f"benchmark_model binary not found at {self.binary_path}. Download the prebuilt binary for "
                "your phone's ABI (`adb shell getprop ro.product.cpu.abi`), e.g. "
                "android_aarch64_benchmark_model for arm64-v8a, or build it with bazel (see 'Measuring on "
                "your phone' in the keras-mnas documentation)."
            ) from None
        except OSError as e:
            raise SetupError(f"Cannot read the benchmark_model binary at {self.binary_path}: {e}.") from e
        self.binary_abi = elf_abi(self._binary)
        self.binary_sha256 = hashlib.sha256(self._binary).hexdigest()

        self.serial = serial
        self.adb_host = adb_host
        self.adb_port = adb_port
        self.threads = threads
        self.core_mask = _normalize_mask(core_mask)
        self.runs = runs
        self.warmup_runs = warmup_runs
        self.min_seconds = float(min_seconds)
        self.repeats = repeats
        self.delegate = delegate
        self.extra_flags = extra_flags
        self.max_thermal_status = max_thermal_status
        self.max_temperature_c = float(max_temperature_c)
        self.max_cool_wait_s = float(max_cool_wait_s)
        self.cool_poll_s = float(cool_poll_s)
        self.call_timeout_s = float(call_timeout_s)
        self.run_timeout_s = float(run_timeout_s)
        self.lease = lease
        self.lease_ttl_s = (
            float(lease_ttl_s)
            if lease_ttl_s is not None
            else self.run_timeout_s + 2 * self.call_timeout_s + 60
        )
        self.lease_wait_s = float(lease_wait_s)
        self.remote_dir = remote_dir
        self.conversion = conversion
        self.calibration_samples = calibration_samples
        self.op_profile = op_profile
        self._phone: Phone | None = None
        self._lock = threading.Lock()
        self._resolved_mask: tuple[str | None, list[int]] | None = None
        self._abi_checked = False

    # ----------------------------------------------------------------------------------------------
    # Settings and facts.

    @property
    def source_name(self) -> str:
        """`"android:SERIAL"`, the `source` of this source's results."""
        return f"android:{self.serial or '?'}"

    def config(self) -> dict[str, Any]:
        """The settings that change the measured figure.

        Example:

        ```python
        AndroidLatency("SERIAL", binary="benchmark_model").config()["threads"]  # 1
        ```
        """
        return {
            **super().config(),
            "serial": self.serial,
            "threads": self.threads,
            "core_mask": self.core_mask,
            "runs": self.runs,
            "warmup_runs": self.warmup_runs,
            "min_seconds": self.min_seconds,
            "repeats": self.repeats,
            "delegate": self.delegate,
            "extra_flags": list(self.extra_flags),
            "binary_sha256": self.binary_sha256,
            "max_thermal_status": self.max_thermal_status,
            "max_temperature_c": self.max_temperature_c,
            "conversion": self.conversion,
            "calibration_samples": self.calibration_samples,
            # Profiling slows every operator down a little; listed only when on, so that the settings of
            # sources without it stay what they were.
            **({"op_profile": True} if self.op_profile else {}),
        }

    def cache_environment(self) -> dict[str, Any]:
        """The converter's version and the phone's serial (found on the adb server when not given).

        Example:

        ```python
        AndroidLatency("SERIAL", binary="benchmark_model").cache_environment()["serial"]  # "SERIAL"
        ```
        """
        # A figure belongs to one phone: with serial=None the key names the phone the server lists now.
        with self._lock:
            serial = self._get_phone().serial
        return {**super().cache_environment(), "serial": serial}

    def _get_phone(self) -> Phone:
        if self._phone is None:
            serial = self.serial
            if serial is None:
                serial = only_serial(self.adb_host, self.adb_port, self.call_timeout_s)
                self.serial = serial
            self._phone = Phone(serial, self.adb_host, self.adb_port, self.call_timeout_s)
        return self._phone

    def device_info(self) -> AndroidDeviceInfo:
        """Facts about the phone: model, SoC, SDK, ABI, CPU frequencies, thermal state and health.

        Example:

        ```python
        info = AndroidLatency("SERIAL", binary="benchmark_model").device_info()
        print(info.model, info.soc, info.big_cores, info.health)
        ```
        """
        return describe(self._get_phone(), self.max_thermal_status, self.max_temperature_c)

    def health_check(self) -> str | None:
        """Checks the phone is usable now: `None` when healthy, else the reason it is not.

        Healthy means listed as `device`, booted, answering shell commands within the call deadline, and not
        hotter than allowed.

        Example:

        ```python
        problem = source.health_check()
        if problem:
            print("phone not ready:", problem)
        ```
        """
        if not self._lock.acquire(blocking=False):
            return None  # Measuring right now: evidently usable.
        try:
            phone = self._get_phone()
            phone.forget()
            phone.require_ready()
            if phone.getprops().get("sys.boot_completed", "1") != "1":
                return "still booting"
            thermal = phone.thermal()
            if not self._cool_enough(thermal):
                return f"too hot ({describe_thermal(thermal)})"
        except (DeviceError, SetupError) as e:
            return str(e)
        finally:
            self._lock.release()
        return None

    # ----------------------------------------------------------------------------------------------
    # Measuring.

    def measure_tflite(
        self,
        tflite_bytes: bytes,
        *,
        quantization: str = "float32",
        extra_provenance: dict[str, Any] | None = None,
        lease_wait_s: float | None = None,
    ) -> LatencyResult:
        """Times a ready-made TFLite model on the phone.

        Args:
            tflite_bytes: The model, e.g. read from a `.tflite` file.
            quantization: What the model is, recorded in the result: `"float32"` or `"int8"`.
            extra_provenance: Extra facts recorded in `provenance`.
            lease_wait_s: Overrides `lease_wait_s` for this call (0: fail at once with `DeviceBusyError` if
                another worker holds the phone).

        Returns:
            A `LatencyResult`.

        Raises:
            ModelError: the phone's runtime cannot run the model (do not retry).
            DeviceError: the phone or its connection failed (offline, unauthorized, hung, crashed, cut off,
                too hot, busy); no figure was produced.
            SetupError: the binary does not fit the phone, or the phone refuses the core mask.
            ValueError: for bytes that are not a TFLite model, or a model with an undefined input shape.

        Example:

        ```python
        with open("mnasnet_a1.tflite", "rb") as f:
            print(AndroidLatency(binary="benchmark_model").measure_tflite(f.read()).median_ms)
        ```
        """
        check_choice("quantization", quantization, QUANTIZATIONS)
        tflite_bytes = validate_tflite(tflite_bytes)
        wait = self.lease_wait_s if lease_wait_s is None else lease_wait_s
        check_seconds("lease_wait_s", wait, allow_zero=True)
        with self._lock:
            phone = self._get_phone()
            try:
                return self._measure_locked(phone, tflite_bytes, quantization, extra_provenance or {}, wait)
            except DeviceError:
                # The phone may have rebooted or been swapped: learn about it afresh next time.
                phone.forget()
                self._resolved_mask = None
                self._abi_checked = False
                raise

    def _measure_locked(
        self, phone, tflite_bytes, quantization, extra_provenance, lease_wait_s
    ) -> LatencyResult:
        phone.require_ready()
        props = phone.getprops()
        self._check_abi(phone)
        mask, cores = self._core_mask(phone)
        lease = (
            Lease(phone, self.remote_dir, self.lease_ttl_s, poll_s=self.cool_poll_s) if self.lease else None
        )
        if lease is not None:
            lease.acquire(lease_wait_s)
        verified = False
        try:
            binary_remote = f"{self.remote_dir}/{_REMOTE_BINARY}"
            model_remote = f"{self.remote_dir}/{_REMOTE_MODEL}"
            pushed_binary, binary_mode = self._sync_file(
                phone, self._binary, binary_remote, 0o755, "benchmark_model"
            )
            if pushed_binary or not binary_mode & 0o100:
                phone.shell(["chmod", "755", binary_remote])
            pushed_model, _ = self._sync_file(phone, tflite_bytes, model_remote, 0o644, "the model")
            command = self._command(binary_remote, model_remote, mask)

            outputs: list[BenchmarkOutput] = []
            waits: list[float] = []
            thermal_before = None
            for repeat in range(self.repeats):
                if lease is not None:
                    lease.renew()
                self._wait_for_idle(phone)
                waited, thermal = self._wait_for_cool(phone)
                waits.append(round(waited, 3))
                if thermal_before is None:
                    thermal_before = thermal
                outputs.append(self._run(phone, command, repeat))
            thermal_after = phone.thermal()
            if lease is not None:
                # A worker that lost its lease mid-measurement may have shared the phone: its figure is void.
                lease.verify()
                verified = True
        finally:
            if lease is not None:
                lease.release(verified=verified)

        return self._result(
            phone,
            props,
            tflite_bytes,
            quantization,
            outputs,
            mask=mask,
            cores=cores,
            command=command,
            waits=waits,
            thermal_before=thermal_before,
            thermal_after=thermal_after,
            pushed=(pushed_binary, pushed_model),
            lease=lease,
            extra=extra_provenance,
        )

    # -- steps -------------------------------------------------------------------------------------

    def _check_abi(self, phone: Phone) -> None:
        if self._abi_checked:
            return
        abis = phone.abis()
        if not abi_compatible(self.binary_abi, abis):
            primary = abis[0] if abis else "unknown"
            wanted = PREBUILT_NAMES.get(primary, f"a benchmark_model built for {primary}")
            raise SetupError(
                f"benchmark_model at {self.binary_path} is built for {self.binary_abi}, but phone "
                f"{phone.serial} runs {','.join(abis) or 'an unknown ABI'} (ro.product.cpu.abi={primary}). "
                f"Use {wanted}.",
                serial=phone.serial,
            )
        self._abi_checked = True

    def _core_mask(self, phone: Phone) -> tuple[str | None, list[int]]:
        if self._resolved_mask is None:
            if self.core_mask is None:
                self._resolved_mask = (None, [])
            elif self.core_mask != "auto":
                value = int(self.core_mask, 16)
                self._resolved_mask = (
                    self.core_mask,
                    [c for c in range(value.bit_length()) if value >> c & 1],
                )
            else:
                freqs = phone.cpu_max_khz()
                if not freqs:
                    logger.warning(
                        "Phone %s exposes no cpufreq information: running benchmark_model without pinning "
                        "it to a core (pass core_mask= to pin it).",
                        phone.serial,
                    )
                    self._resolved_mask = (None, [])
                else:
                    ranked = sorted(freqs, key=lambda c: (freqs[c], c), reverse=True)
                    cores = sorted(ranked[: self.threads])
                    self._resolved_mask = (format(sum(1 << c for c in cores), "x"), cores)
        return self._resolved_mask

    def _sync_file(self, phone: Phone, data: bytes, remote: str, mode: int, what: str) -> tuple[bool, int]:
        """Makes the phone hold `data` at `remote`; returns whether it was pushed, and the file's mode."""
        digest = hashlib.sha256(data).hexdigest()
        info = phone.stat(remote)
        if stat.S_ISREG(info.mode) and info.size == len(data) and phone.sha256(remote) == digest:
            return False, info.mode
        phone.push(data, remote, mode, what)
        info = phone.stat(remote)
        if info.size != len(data):
            raise DeviceError(
                f"Pushing {what} to {remote} on phone {phone.serial} left {info.size} of {len(data)} bytes.",
                serial=phone.serial,
            )
        remote_digest = phone.sha256(remote)
        if remote_digest is not None and remote_digest != digest:
            raise DeviceError(
                f"{what} pushed to {remote} on phone {phone.serial} is corrupt (SHA-256 {remote_digest}, "
                f"expected {digest}).",
                serial=phone.serial,
            )
        return True, info.mode

    def _command(self, binary_remote: str, model_remote: str, mask: str | None) -> list[str]:
        delegate_flags = {
            "xnnpack": ["--use_xnnpack=true"],
            "none": ["--use_xnnpack=false"],
            "gpu": ["--use_gpu=true", "--use_xnnpack=false"],
            "nnapi": ["--use_nnapi=true", "--use_xnnpack=false"],
        }[self.delegate]
        command = [] if mask is None else ["taskset", mask]
        return [
            *command,
            binary_remote,
            f"--graph={model_remote}",
            f"--num_threads={self.threads}",
            f"--warmup_runs={self.warmup_runs}",
            "--warmup_min_secs=0",
            f"--num_runs={self.runs}",
            f"--min_secs={self.min_seconds:g}",
            *delegate_flags,
            *(["--enable_op_profiling=true"] if self.op_profile else []),
            *self.extra_flags,
        ]

    def _wait_for_idle(self, phone: Phone) -> None:
        give_up = time.monotonic() + self.run_timeout_s
        while True:
            result = phone.shell(["pidof", _REMOTE_BINARY])
            if result.exit_code != 0 or not result.stdout.strip():
                return
            if time.monotonic() >= give_up:
                raise DeviceBusyError(
                    f"A benchmark_model process ({result.stdout.strip()}) is still running on phone "
                    f"{phone.serial} after {self.run_timeout_s:g} s (left by a worker that died or lost its "
                    "lease?); it would disturb the measurement.",
                    serial=phone.serial,
                )
            time.sleep(self.cool_poll_s)

    def _cool_enough(self, thermal: ThermalState) -> bool:
        if thermal.status is not None:
            return thermal.status <= self.max_thermal_status
        if thermal.cpu_max_c is not None:
            return thermal.cpu_max_c <= self.max_temperature_c
        return True  # The phone reports nothing to wait for.

    def _wait_for_cool(self, phone: Phone) -> tuple[float, ThermalState]:
        start = time.monotonic()
        while True:
            thermal = phone.thermal()
            waited = time.monotonic() - start
            if self._cool_enough(thermal):
                if waited > 0.5:
                    logger.info("Phone %s cooled down in %.0f s.", phone.serial, waited)
                return waited, thermal
            if waited >= self.max_cool_wait_s:
                raise DeviceTooHotError(
                    f"Phone {phone.serial} did not cool down within {self.max_cool_wait_s:g} s "
                    f"({describe_thermal(thermal)}; the limit is status <= {self.max_thermal_status}"
                    + (f" / CPU <= {self.max_temperature_c:g} C" if thermal.status is None else "")
                    + "). Let it rest, take its case off, or raise the limit.",
                    serial=phone.serial,
                )
            time.sleep(min(self.cool_poll_s, max(0.01, self.max_cool_wait_s - waited)))

    def _run(self, phone: Phone, command: list[str], repeat: int) -> BenchmarkOutput:
        result = phone.shell(command, timeout=self.run_timeout_s)
        text = result.output
        if "sched_setaffinity" in text or (command[0] == "taskset" and result.exit_code == 127):
            raise SetupError(
                f"Phone {phone.serial} refused to pin benchmark_model with `taskset {command[1]}` "
                f"({text.strip()[:200]}). Pass another core_mask (its cpuset may exclude those CPUs) or "
                "core_mask=None.",
                serial=phone.serial,
            )
        if "Unconsumed cmdline flags" in text or "unrecognized flag" in text.lower():
            raise SetupError(
                f"benchmark_model on phone {phone.serial} does not understand some flags "
                f"({text.strip()[-300:]}); it is too old for these settings. Use a recent LiteRT build.",
                serial=phone.serial,
            )
        if result.exit_code in (126, 127) and "benchmark_model" in text:
            raise DeviceError(
                f"Phone {phone.serial} could not execute benchmark_model (exit status "
                f"{result.exit_code}): {text.strip()}",
                serial=phone.serial,
                output=text,
                exit_code=result.exit_code,
            )
        try:
            output = parse_benchmark_output(text, exit_code=result.exit_code)
        except LatencyMeasurementError as e:
            e.serial = phone.serial
            raise
        if self.op_profile and (output.op_profile is None or not output.op_profile.by_type):
            raise BenchmarkError(
                f"benchmark_model on phone {phone.serial} printed no per-operator times although "
                "--enable_op_profiling=true was passed: its output was cut off after the summary.",
                reason="truncated",
                serial=phone.serial,
                output=text,
                exit_code=result.exit_code,
            )
        if output.runs is not None and output.runs.count < self.runs:
            logger.warning(
                "Phone %s: benchmark_model stopped after %d of %d runs in process %d (its --max_secs limit).",
                phone.serial,
                output.runs.count,
                self.runs,
                repeat,
            )
        return output

    def _result(
        self,
        phone: Phone,
        props: dict[str, str],
        tflite_bytes: bytes,
        quantization: str,
        outputs: list[BenchmarkOutput],
        **info,
    ) -> LatencyResult:
        figures = [o.figure_ms for o in outputs]
        counts = [o.runs.count if o.runs is not None else self.runs for o in outputs]
        means = [o.inference_avg_us / 1000.0 for o in outputs]
        stds = [(o.runs.std_us or 0.0) / 1000.0 if o.runs is not None else 0.0 for o in outputs]
        total = sum(counts)
        mean = sum(n * m for n, m in zip(counts, means, strict=True)) / total
        # Pooled variance: within-process spread plus the spread between the processes' means.
        variance = (
            sum(n * (s * s + (m - mean) ** 2) for n, s, m in zip(counts, stds, means, strict=True)) / total
        )
        std = math.sqrt(variance)
        uppers = []
        for o in outputs:
            r = o.runs
            if r is not None and r.p95_us is not None:
                uppers.append(r.p95_us / 1000.0)
            elif r is not None and r.max_us is not None:
                uppers.append(r.max_us / 1000.0)
            else:
                uppers.append(o.inference_avg_us / 1000.0)
        median = float(statistics.median(figures))
        between_cv = statistics.pstdev(figures) / statistics.fmean(figures) if len(figures) > 1 else 0.0
        percentiles = [
            (o.runs.p5_us, o.runs.median_us, o.runs.p95_us)
            for o in outputs
            if o.runs is not None and None not in (o.runs.p5_us, o.runs.median_us, o.runs.p95_us)
        ]
        robust_cv = None
        if len(percentiles) == len(outputs) and all(m > 0 for _, m, _ in percentiles):
            robust_cv = max(between_cv, *(percentile_cv(*p) for p in percentiles))
        lease = info["lease"]
        provenance = {
            "serial": phone.serial,
            "adb_server": phone.address,
            "device_model": props.get("ro.product.model", ""),
            "manufacturer": props.get("ro.product.manufacturer", ""),
            "soc": soc_name(props),
            "board": props.get("ro.board.platform", ""),
            "sdk": int_or_none(props.get("ro.build.version.sdk")),
            "android_release": props.get("ro.build.version.release", ""),
            "fingerprint": props.get("ro.build.fingerprint", ""),
            "abi": props.get("ro.product.cpu.abi", ""),
            "core_mask": info["mask"],
            "cores": info["cores"],
            "cores_max_khz": [phone.cpu_max_khz().get(c) for c in info["cores"]] if info["cores"] else [],
            "threads": self.threads,
            "delegate": self.delegate,
            "command": shlex.join(info["command"]),
            "binary_sha256": self.binary_sha256,
            "binary_abi": self.binary_abi,
            "binary_path": self.binary_path,
            "repeats": self.repeats,
            "runs_per_process": counts,
            "per_process_ms": figures,
            "per_process_figure": outputs[0].figure_kind,
            "per_process_cv": [(s / m if m > 0 else 0.0) for s, m in zip(stds, means, strict=True)],
            "between_process_cv": between_cv,
            "p90_is_upper_bound": True,
            "output_generation": outputs[0].generation,
            "init_ms": [o.init_us / 1000.0 if o.init_us is not None else None for o in outputs],
            "memory_overall_mb": outputs[-1].memory_overall_mb,
            **({"op_profile": _merge_op_profiles(outputs)} if self.op_profile else {}),
            "thermal_before": info["thermal_before"].to_dict() if info["thermal_before"] else None,
            "thermal_after": info["thermal_after"].to_dict(),
            "thermal_wait_s": info["waits"],
            "pushed_binary": info["pushed"][0],
            "pushed_model": info["pushed"][1],
            "lease": None if lease is None else {"owner": lease.owner, "took_over_from": lease.broke},
            "measured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "worker": socket.gethostname(),
            **info["extra"],
        }
        result = self._tflite_result(
            tflite_bytes,
            quantization=quantization,
            source=f"android:{phone.serial}",
            median_ms=median,
            mean_ms=mean,
            p90_ms=max(uppers),
            std_ms=std,
            runs=total,
            robust_cv=robust_cv,
            provenance=provenance,
        )
        self._log_if_unstable(
            result,
            "Unstable latency on phone %s: median %.3f ms with a spread of %.1f%% (%s) "
            "over %d runs in %d processes (per process: %s ms). Is the phone busy, hot, or throttling?",
            phone.serial,
            result.median_ms,
            100 * result.spread,
            "coefficient of variation" if robust_cv is None else "5th-95th percentile range, as a cv",
            result.runs,
            self.repeats,
            ", ".join(f"{f:.3f}" for f in figures),
        )
        return result


def _merge_op_profiles(outputs: list[BenchmarkOutput]) -> dict[str, Any]:
    """The per-operator times of several processes, each the median over the processes that printed it."""
    profiles = [o.op_profile for o in outputs if o.op_profile is not None]

    def types(field: str) -> dict[str, float]:
        tables = [getattr(p, field) for p in profiles]
        names = dict.fromkeys(name for table in tables for name in table)
        return {name: statistics.median(t[name] for t in tables if name in t) for name in names}

    def nodes(field: str) -> dict[str, dict[str, Any]]:
        tables = [getattr(p, field) for p in profiles]
        merged = {}
        for name in dict.fromkeys(name for table in tables for name in table):
            timings = [t[name] for t in tables if name in t]
            merged[name] = {
                "node_type": timings[0].node_type,
                "avg_ms": statistics.median(t.avg_ms for t in timings),
                "times_called": timings[0].times_called,
            }
        return merged

    return {
        "by_type": types("by_type"),
        "by_node": nodes("by_node"),
        "delegate_by_type": types("delegate_by_type"),
        "delegate_by_node": nodes("delegate_by_node"),
    }
