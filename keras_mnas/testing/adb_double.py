"""A loopback adb server that answers like Android phones, with injectable faults.

`AdbDouble` listens on 127.0.0.1 (a free port by default) and speaks the ADB host protocol (smart-socket
requests: a 4-hex-digit length and a payload, answered `OKAY` or `FAIL` + length + message) to the real
`adbutils` client:

- host services: `host:version`, `host:devices`, `host:devices-l`, `host:kill`, `host-serial:S:features`,
  `host-serial:S:get-state` (and the `host-transport-id:N:` forms);
- transports: `host:tport:serial:S` (adb 1.0.41+, answered with an 8-byte transport id),
  `host:transport:S` (older servers), `host:transport-id:N`, `host:tport:any`, `host:transport-any`;
- on a transport: `shell:CMD` (v1: raw output, then the connection closes), `shell,v2:CMD` (packets: 1-byte
  id 1 stdout / 2 stderr / 3 exit, 4-byte little-endian length, data) and `sync:` with `STAT`, `LIST`,
  `SEND` (`DATA` chunks, `DONE` + mtime, answered `OKAY` or `FAIL` + message), `RECV` and `QUIT`.

Each `FakePhone` has properties (`getprop`), a small file system (`/data/local/tmp`; `/sdcard`, which
refuses symbolic links as shared storage does; cpufreq and thermal-zone files under `/sys`), `dumpsys
thermalservice`, a handful of toybox commands (`cat`, `grep`, `ls`, `sha256sum`, `chmod`, `date`, `ln -s`,
`readlink`, `mv`, `rm`, `pidof`, `df`, `taskset`, `echo`, with toybox's error messages) and runs any
executable pushed to it as a fake `benchmark_model` that prints real-format output of a chosen generation
with a configurable latency (`FakeBenchmark`), and per-operator tables under `--enable_op_profiling=true`.
Shell commands are parsed the way `sh` would split them (quotes, `;`, `&&`), so a command whose arguments
were not quoted properly fails here as it would on a phone.

`FakePhone.serve_shell` answers a shell service, faults included, for any transport: this double's host
protocol and `AdbdDevice`'s transport protocol both call it, so a new fault or output rule holds through the
real adb server as well.

Faults (`Fault`) hit the next shell commands that contain a given text: a connection dropped mid-output, a
command that hangs (silent, or trickling one byte at a time so that only a wall-clock deadline stops it), a
slow command, exit statuses 1 and 134, output truncated before the summary, the phone going offline or
unauthorized or disappearing mid-command. A phone can also start offline or unauthorized, refuse core masks,
or have a full disk (`free_bytes`).

Keep `adbutils` from starting a real adb server in tests: set the environment variable `ADBUTILS_ADB_PATH` to
a program that does nothing (e.g. `shutil.which("true")`).

Example:

```python
import adbutils
from keras_mnas.testing import AdbDouble, FakeBenchmark, FakePhone, Fault

phone = FakePhone("PHONE1", benchmark=FakeBenchmark(generation="litert", latency_ms=12.0))
with AdbDouble([phone]) as server:
    client = adbutils.AdbClient(host="127.0.0.1", port=server.port)
    print(client.device("PHONE1").shell("getprop ro.product.model"))  # Pixel 7
    phone.add_fault(Fault("benchmark_model", "exit", exit_code=134))
```
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import math
import random
import select
import shlex
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

#: The adb server protocol version the double reports by default (adb 1.0.41).
ADB_SERVER_VERSION = 41

#: What a `Fault` can do to a shell command.
FAULT_ACTIONS = (
    "drop",  # send part of the output, then close the connection without an exit status
    "hang",  # send nothing, never finish (until the client gives up)
    "trickle",  # send one byte every `interval_s`, never finish: defeats a silence timeout
    "delay",  # wait `delay_s`, then run normally
    "exit",  # the command exits with `exit_code` (default 1) printing `output` (default: a realistic error)
    "truncate",  # the command's output is cut at `keep_fraction`, exit status 0
    "offline",  # the phone goes offline mid-command (connection dropped)
    "unauthorized",  # the phone's authorization is revoked mid-command (connection dropped)
    "disappear",  # the phone is unplugged mid-command (connection dropped, gone from the device list)
)

#: The faults that end the connection mid-output (the transport decides what else happens to the phone).
CUTTING_ACTIONS = ("drop", "offline", "unauthorized", "disappear")

_UNAUTHORIZED_MESSAGE = (
    "device unauthorized.\nThis adb server's $ADB_VENDOR_KEYS is not set\nTry 'adb kill-server' if that "
    "seems wrong.\nOtherwise check for a confirmation dialog on your device."
)

_DEFAULT_CPU_MAX_KHZ = (1803000,) * 4 + (2348000,) * 2 + (2850000,) * 2
_DEFAULT_ZONES = (("cpu-0-0-usr", 36500), ("cpu-1-0-usr", 37800), ("cpu-2-0-usr", 39200), ("battery", 29800))
_DEFAULT_HAL_TEMPERATURES = (("CPU0", 0, 36.5), ("CPU7", 0, 39.2), ("battery", 2, 29.8), ("skin", 3, 31.0))

_SYNC_CHUNK = 64 * 1024
# The file system's block: the least a new symbolic link may need on a full /data.
_BLOCK_BYTES = 4096
# The fake benchmark's runs per process at most, however short its latency and long its --min_secs.
_MAX_FAKE_RUNS = 100_000


@dataclasses.dataclass
class Fault:
    """A failure injected into shell commands whose text contains `match`.

    Args:
        match: Text the command line must contain, e.g. `"benchmark_model"` or `"getprop"`.
        action: One of `FAULT_ACTIONS`.
        times: How many matching commands it hits (-1: every one).
        exit_code: For `"exit"`: the status (default 1).
        output: For `"exit"`: what the command prints (default: a realistic error for the status).
        keep_fraction: For `"drop"`, `"truncate"` and the state changes: the share of the output sent.
        interval_s: For `"trickle"`: seconds between bytes.
        delay_s: For `"delay"`: seconds to wait before running the command.
    """

    match: str
    action: str
    times: int = 1
    exit_code: int | None = None
    output: str | None = None
    keep_fraction: float = 0.5
    interval_s: float = 0.05
    delay_s: float = 0.5

    def __post_init__(self):
        if self.action not in FAULT_ACTIONS:
            raise ValueError(f"Fault.action must be one of {FAULT_ACTIONS}; received {self.action!r}.")
        if not 0.0 <= self.keep_fraction <= 1.0:
            raise ValueError(f"Fault.keep_fraction must be in [0, 1]; received {self.keep_fraction!r}.")


@dataclasses.dataclass
class BenchmarkRun:
    """One run of the fake benchmark_model, as the phone saw it.

    Attributes:
        index: 0 for the phone's first run, then 1, 2, ...
        argv: The command's arguments after `taskset MASK` (binary first).
        core_mask: The `taskset` mask as given, or `None` without `taskset`.
        flags: `--name=value` flags as a dict of strings.
        graph_sha256: SHA-256 of the model file the run read.
        latency_ms: The latency the fake tool centred its timings on.
        started, finished: `time.monotonic()` at start and end.
    """

    index: int
    argv: list[str]
    core_mask: str | None
    flags: dict[str, str]
    graph_sha256: str
    latency_ms: float
    started: float
    finished: float = 0.0


@dataclasses.dataclass
class FakeBenchmark:
    """How the fake benchmark_model behaves.

    Args:
        generation: Output format: `"tf1"`, `"tf1.13"`, `"tf2"` or `"litert"` (see
            `keras_mnas.latency.benchmark_model`).
        latency_ms: The per-run latency the timings centre on, or a callable taking the `BenchmarkRun`
            (flags, model hash, index) and returning it.
        relative_std: Relative standard deviation of the per-run times.
        preempted_share: Share of the timed runs that the OS pre-empts, each taking 100 times as long.
        init_ms: Initialisation time printed.
        duration_s: Wall-clock seconds the fake process takes (to test exclusivity and deadlines).
        model_error: Make every run fail like a model the runtime cannot run: `"op-version"`,
            `"delegate"` or `"xnnpack-reshape"`.
        seed: Seed of the per-run jitter.
        ops: The model's nodes as `(name, type, share of the latency)`, printed in run order under
            `--enable_op_profiling=true`.
        model_op_costs: `(microseconds per operator, microseconds per thousand output elements)`: instead
            of `ops`, the pushed model's own operators, each costing the first plus the second times its
            output's size, as LiteRT names them in a profile (`[output tensor]:index`, its type). A run then
            takes `latency_ms` (the fixed cost of one invocation) plus their sum. With XNNPACK
            (`--use_xnnpack=true`, the default) the profile is one `TfLiteXNNPackDelegate` node, as on a
            phone.
    """

    generation: str = "litert"
    latency_ms: float | Callable[[BenchmarkRun], float] = 5.0
    relative_std: float = 0.01
    preempted_share: float = 0.0
    init_ms: float = 15.0
    duration_s: float = 0.0
    model_error: str | None = None
    seed: int = 0
    ops: tuple[tuple[str, str, float], ...] = (
        ("conv_stem", "CONV_2D", 0.3),
        ("block1_dw", "DEPTHWISE_CONV_2D", 0.2),
        ("block1_project", "CONV_2D", 0.35),
        ("pool", "MEAN", 0.05),
        ("logits", "FULLY_CONNECTED", 0.1),
    )
    model_op_costs: tuple[float, float] | None = None


@functools.lru_cache(maxsize=64)
def _model_operators(tflite_bytes: bytes) -> tuple[tuple[str, str, int], ...]:
    """A TFLite model's operators in run order: (profile name, type, output elements)."""
    from keras_mnas.tflite import load_interpreter

    # Without the default delegate: the operators as the model holds them, as an undelegated run has them.
    interpreter = load_interpreter(tflite_bytes, use_default_delegate=False)
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    operators = []
    for op in interpreter._get_ops_details():
        outputs = [tensors[i] for i in op["outputs"]]
        name = "[" + ", ".join(t["name"] for t in outputs) + f"]:{op['index']}"
        operators.append((name, op["op_name"], sum(math.prod(t["shape"]) for t in outputs)))
    return tuple(operators)


def model_op_profile(
    tflite_bytes: bytes, costs: tuple[float, float], *, use_xnnpack: bool = False
) -> list[tuple[str, str, float]]:
    """The per-operator profile of a TFLite model under a deterministic cost, as `FakeBenchmark` prints it.

    Args:
        tflite_bytes: The model.
        costs: `(microseconds per operator, microseconds per thousand output elements)`.
        use_xnnpack: Report the whole model as one XNNPACK delegate node, as benchmark_model does.

    Returns:
        `(name, type, microseconds)` per node, in run order.

    Example:

    ```python
    model_op_profile(convert_to_tflite(model), (2.0, 0.5))[0]  # ("[model/stem_activation/Relu;...]:0", ...)
    ```
    """
    per_op, per_kelement = costs
    nodes = [
        (name, kind, per_op + per_kelement * elements / 1000.0)
        for name, kind, elements in _model_operators(bytes(tflite_bytes))
    ]
    if use_xnnpack:
        return [(nodes[-1][0], "TfLiteXNNPackDelegate", sum(us for _, _, us in nodes))]
    return nodes


def _fmt(value: float) -> str:
    # C++ iostreams print doubles with 6 significant digits: 1240270 -> 1.24027e+06, like "%g".
    return f"{value:g}"


_ELF_IDENTITY = {"arm64-v8a": (2, 183), "armeabi-v7a": (1, 40), "x86_64": (2, 62), "x86": (1, 3)}


def fake_benchmark_binary(abi: str = "arm64-v8a", size: int = 4096) -> bytes:
    """Bytes that pass for a `benchmark_model` executable of `abi`: an ELF header, then zeros.

    `AndroidLatency` reads a binary's ELF class and machine to refuse one built for another ABI before
    pushing it; the double never executes it.

    Example:

    ```python
    pathlib.Path("benchmark_model").write_bytes(fake_benchmark_binary("arm64-v8a"))
    ```
    """
    if abi not in _ELF_IDENTITY:
        raise ValueError(f"abi must be one of {sorted(_ELF_IDENTITY)}; received {abi!r}.")
    elf_class, machine = _ELF_IDENTITY[abi]
    header = b"\x7fELF" + bytes([elf_class, 1, 1, 0]) + bytes(8) + (3).to_bytes(2, "little")
    header += machine.to_bytes(2, "little")
    return header + bytes(max(0, size - len(header)))


def fake_benchmark_output(
    generation: str,
    *,
    graph: str,
    warmup_us: list[int],
    runs_us: list[int],
    init_us: int,
    threads: int = 1,
    use_xnnpack: bool = True,
    op_profile: Sequence[tuple[str, str, float]] | None = None,
) -> str:
    """benchmark_model's output for given per-run times, in the format of one generation.

    Args:
        generation: `"tf1"`, `"tf1.13"`, `"tf2"` or `"litert"`.
        graph: The model path printed.
        warmup_us: Warm-up run times in microseconds (at least one).
        runs_us: Measured run times in microseconds (at least one).
        init_us: Initialisation time in microseconds.
        threads: Threads printed in the parameter list.
        use_xnnpack: Whether the output mentions the XNNPACK delegate.
        op_profile: With `--enable_op_profiling=true`: the nodes as `(name, type, average microseconds)`, in
            run order; their tables (TensorFlow's `StatsCalculator` format) follow the summary.

    Returns:
        The text, newline-terminated.

    Example:

    ```python
    text = fake_benchmark_output("tf2", graph="/data/local/tmp/m.tflite", warmup_us=[900],
                                 runs_us=[800, 810], init_us=2000)
    ```
    """
    if not warmup_us or not runs_us:
        raise ValueError("fake_benchmark_output needs at least one warm-up run and one measured run.")

    def stats(times: list[int]) -> str:
        count = len(times)
        if min(times) == max(times):
            # TensorFlow's `Stat` prints no average when every value is the same.
            line = f"count={count} curr={times[-1]}" + ("(all same)" if count > 1 else "")
        else:
            mean = sum(times) / count
            std = int(math.sqrt(sum((t - mean) ** 2 for t in times) / count))
            line = (
                f"count={count} first={times[0]} curr={times[-1]} min={min(times)} max={max(times)} "
                f"avg={_fmt(mean)} std={std}"
            )
        if generation == "litert":
            ordered = sorted(times)

            def percentile(p):
                return ordered[min(count - 1, int(p / 100.0 * count))]

            line += f" p5={percentile(5)} median={percentile(50)} p95={percentile(95)}"
        return line

    warm_avg = sum(warmup_us) / len(warmup_us)
    run_avg = sum(runs_us) / len(runs_us)
    lines = [
        "STARTING!",
        f"Min num runs: [{len(runs_us)}]",
        f"Num threads: [{threads}]",
        f"Min warmup runs: [{len(warmup_us)}]",
        f"Graph: [{graph}]",
        f"Use xnnpack: [{int(use_xnnpack)}]",
        f"Loaded model {graph}",
    ]
    if generation in ("tf2", "litert"):
        # TF 2.x already printed these two with the "INFO: " prefix.
        lines.append("INFO: Initialized TensorFlow Lite runtime.")
        if use_xnnpack:
            lines.append("INFO: Created TensorFlow Lite XNNPACK delegate for CPU.")
        lines.append("The input model file size (MB): 3.89652")
    lines.append(f"Initialized session in {_fmt(init_us / 1000.0)}ms.")
    for times in (warmup_us, runs_us):
        lines.append(
            f"Running benchmark for at least {len(times)} iterations and at least 0 seconds but terminate "
            "if exceeding 150 seconds."
        )
        lines += [stats(times), ""]
    if generation == "tf1":
        lines.append(
            f"Average inference timings in us: Warmup: {_fmt(warm_avg)}, Init: {init_us}, "
            f"no stats: {_fmt(run_avg)}"
        )
    elif generation == "tf1.13":
        lines.append(
            f"Average inference timings in us: Warmup: {_fmt(warm_avg)}, Init: {init_us}, "
            f"Inference: {_fmt(run_avg)}"
        )
    elif generation in ("tf2", "litert"):
        lines.append(
            f"Inference timings in us: Init: {init_us}, First inference: {warmup_us[0]}, "
            f"Warmup (avg): {_fmt(warm_avg)}, Inference (avg): {_fmt(run_avg)}"
        )
        lines.append(
            "Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE "
            "to the actual memory footprint of the model at runtime. Take the information at your discretion."
        )
        if generation == "litert":
            lines.append(
                "Memory footprint delta from the start of the tool (MB): init=6.01953 overall=14.8828"
            )
        else:
            lines.append("Peak memory footprint (MB): init=3.71094 overall=29.5703")
    else:
        raise ValueError(
            f"Unknown benchmark_model generation {generation!r}; expected one of tf1, tf1.13, tf2, litert."
        )
    prefix = "INFO: " if generation == "litert" else ""
    # Blank lines carry no prefix in the real tool either.
    out = [(prefix + line) if line and not line.startswith("INFO: ") else line for line in lines]
    text = "\n".join(out) + "\n"
    if op_profile is not None:
        text += _op_profile_text(op_profile, runs=len(runs_us), init_us=init_us, prefix=prefix)
    return text


def _field(value, width: int) -> str:
    # TensorFlow's `InitField`: a tab, then right-aligned in `width`, floats with 3 decimals.
    text = f"{value:.3f}" if isinstance(value, float) else str(value)
    return "\t" + text.rjust(width)


def _op_profile_text(nodes: Sequence[tuple[str, str, float]], *, runs: int, init_us: int, prefix: str) -> str:
    """The tables `--enable_op_profiling=true` prints after the summary, as the profiling listener does.

    Each section is one log message: only its first line carries the log prefix.
    """
    total_us = sum(us for _, _, us in nodes) or 1.0

    def node_table(title: str, ordered) -> list[str]:
        header = "".join(
            _field(name, width)
            for name, width in (
                ("[node type]", 24), ("[first]", 9), ("[avg ms]", 9), ("[%]", 8), ("[cdf%]", 8),
                ("[mem KB]", 10), ("[times called]", 9),
            )
        )
        lines, cumulative = [f"============================== {title} ==============================",
                             header + "\t[Name]"], 0.0
        for name, kind, us in ordered:
            cumulative += us
            lines.append(
                _field(kind, 24) + _field(us / 1000.0, 9) + _field(us / 1000.0, 9)
                + _field(100.0 * us / total_us, 7) + "%" + _field(100.0 * cumulative / total_us, 7) + "%"
                + _field(0.0, 10) + _field(1, 9) + "\t" + name
            )
        return [*lines, ""]

    by_type: dict[str, list[float]] = {}
    for _, kind, us in nodes:
        by_type.setdefault(kind, []).append(us)
    summary = [
        f"Number of nodes executed: {len(nodes)}",
        "============================== Summary by node type ==============================",
        "".join(
            _field(name, width)
            for name, width in (
                ("[Node type]", 24), ("[count]", 9), ("[avg ms]", 10), ("[avg %]", 11), ("[cdf %]", 11),
                ("[mem KB]", 10), ("[times called]", 10),
            )
        ),
    ]
    cdf = 0.0
    for kind, times in sorted(by_type.items(), key=lambda item: -sum(item[1])):
        share = 100.0 * sum(times) / total_us
        cdf += share
        summary.append(
            _field(kind, 24) + _field(len(times), 9) + _field(sum(times) / 1000.0, 10)
            + _field(share, 10) + "%" + _field(cdf, 10) + "%" + _field(0.0, 10) + _field(len(times), 9)
        )
    run_total = int(total_us)
    init = node_table("Run Order", [("AllocateTensors", "AllocateTensors", float(init_us))])
    init += [f"Timings (microseconds): count=1 curr={init_us}", "Memory (bytes): count=0"]
    init += ["1 nodes observed", ""]
    same = "(all same)" if runs > 1 else ""
    regular = node_table("Run Order", nodes)
    regular += node_table("Top by Computation Time", sorted(nodes, key=lambda node: -node[2]))
    regular += [*summary, "", f"Timings (microseconds): count={runs} curr={run_total}{same}"]
    regular += ["Memory (bytes): count=0", f"{len(nodes)} nodes observed", ""]
    sections = [
        ("Profiling Info for Benchmark Initialization:", init),
        ("Operator-wise Profiling Info for Regular Benchmark Runs:", regular),
    ]
    return "".join(prefix + header + "\n" + "\n".join(body) + "\n" for header, body in sections)


_MODEL_ERROR_OUTPUTS = {
    "op-version": (
        "ERROR: Didn't find op for builtin opcode 'FULLY_CONNECTED' version '12'. An older version of this "
        "builtin might be supported. Are you using an old TFLite binary with a newer model?\n\n"
        "ERROR: Registration failed.\n\nERROR: Failed to initialize the interpreter\n"
        "ERROR: Benchmarking failed.\n"
    ),
    "delegate": (
        "INFO: Created TensorFlow Lite delegate for GPU.\n"
        "ERROR: Following operations are not supported by GPU delegate:\n"
        "CUSTOM Erf: Operation is not supported.\nERROR: Failed to apply GPU delegate.\n"
        "ERROR: Benchmarking failed.\n"
    ),
    "xnnpack-reshape": (
        "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\nERROR: failed to reshape runtime\n"
        "ERROR: Node number 12 (TfLiteXNNPackDelegate) failed to prepare.\n"
        "ERROR: Failed to allocate tensors!\n"
        "ERROR: Benchmarking failed.\n"
    ),
}


@dataclasses.dataclass
class _Node:
    kind: str  # "file", "dir", "link"
    data: bytes = b""
    mode: int = 0o644
    mtime: int = 0
    target: str = ""


@dataclasses.dataclass
class _Outcome:
    stdout: bytes = b""
    stderr: bytes = b""
    exit_code: int = 0
    # Both streams in the order they were written (what shell v1 sends).
    merged: bytes = b""

    def __post_init__(self):
        if not self.merged:
            self.merged = self.stdout + self.stderr

    def write(self, data: bytes) -> None:
        self.stdout += data
        self.merged += data

    def error(self, data: bytes) -> None:
        self.stderr += data
        self.merged += data


class ShellChannel(Protocol):
    """How a transport carries one shell command's output: what `FakePhone.serve_shell` writes to.

    `AdbDouble` (a host-protocol socket) and `AdbdDevice` (a transport-protocol stream) each implement it,
    so the faults and output rules of `serve_shell` hold through either.
    """

    def send(self, data: bytes) -> None:
        """Writes bytes to the client; raises `OSError` (or the transport's own error) once it is gone."""

    def wait_closed(self, seconds: float) -> bool:
        """Waits up to `seconds`; True as soon as the client went away or the transport is stopping."""

    def cut(self, fault: Fault, partial: bytes) -> None:
        """Sends `partial` and ends the connection as `fault.action` (one of `CUTTING_ACTIONS`) does."""


class FakePhone:
    """One fake Android phone.

    Args:
        serial: The serial `adb devices` lists.
        model: `ro.product.model`.
        manufacturer: `ro.product.manufacturer`.
        soc_model: `ro.soc.model` (Android 12+; `None` leaves it unset, like older phones).
        soc_manufacturer: `ro.soc.manufacturer` (Android 12+; `None` leaves it unset).
        board: `ro.board.platform`.
        sdk: `ro.build.version.sdk`. Below 24 (Android 7), shell v1 output comes through a pty, with "\r\n"
            line ends, like such a phone's.
        release: `ro.build.version.release`.
        abi: `ro.product.cpu.abi`.
        abilist: `ro.product.cpu.abilist` (default: what phones of that ABI report).
        cpu_max_khz: `cpuinfo_max_freq` of each CPU (its length is the CPU count).
        thermal_status: `Thermal Status` of `dumpsys thermalservice`: an int, a list consumed one value per
            call (the last one sticks), or `None` for a phone without the thermal service.
        thermal_zones: `(type, millidegrees)` of `/sys/class/thermal/thermal_zoneN`.
        hal_temperatures: `(name, type, celsius)` readings `dumpsys thermalservice` lists (type 0: CPU,
            2: battery, 3: skin).
        state: `"device"`, `"offline"` or `"unauthorized"`.
        shell_v2: Whether the phone advertises the `shell_v2` feature.
        free_bytes: Free space on `/data`: for pushes, and a block for each new symbolic link.
        allowed_cpus: CPUs `taskset` may use (default: all); a mask outside them is refused like a cpuset
            refusing it.
        benchmark: How executables pushed to the phone behave (a `FakeBenchmark`).
        extra_props: More properties.
        clock_offset_s: Added to the host's clock for `date +%s`.
    """

    def __init__(
        self,
        serial: str,
        *,
        model: str = "Pixel 7",
        manufacturer: str = "Google",
        soc_model: str | None = "GS201",
        soc_manufacturer: str | None = "Google",
        board: str = "gs201",
        sdk: int = 34,
        release: str = "14",
        abi: str = "arm64-v8a",
        abilist: str | None = None,
        cpu_max_khz: Iterable[int] = _DEFAULT_CPU_MAX_KHZ,
        thermal_status: int | list[int] | None = 0,
        thermal_zones: Iterable[tuple[str, int]] = _DEFAULT_ZONES,
        hal_temperatures: Iterable[tuple[str, int, float]] = _DEFAULT_HAL_TEMPERATURES,
        state: str = "device",
        shell_v2: bool = True,
        free_bytes: int = 1 << 30,
        allowed_cpus: Iterable[int] | None = None,
        benchmark: FakeBenchmark | None = None,
        extra_props: dict[str, str] | None = None,
        clock_offset_s: float = 0.0,
    ):
        self.serial = serial
        self.sdk = sdk
        self.state = state
        self.shell_v2 = shell_v2
        self.free_bytes = free_bytes
        self.benchmark = benchmark or FakeBenchmark()
        self.clock_offset_s = clock_offset_s
        self.cpu_max_khz = list(cpu_max_khz)
        self.allowed_cpus = set(range(len(self.cpu_max_khz)) if allowed_cpus is None else allowed_cpus)
        self.thermal_status = thermal_status
        self.hal_temperatures = list(hal_temperatures)
        if abilist is None:
            abilist = {"arm64-v8a": "arm64-v8a,armeabi-v7a,armeabi", "x86_64": "x86_64,x86"}.get(abi, abi)
        self.props: dict[str, str] = {
            "ro.product.model": model,
            "ro.product.manufacturer": manufacturer,
            "ro.product.name": model.lower().replace(" ", "_"),
            "ro.product.device": model.lower().replace(" ", ""),
            "ro.board.platform": board,
            "ro.hardware": board,
            "ro.build.version.sdk": str(sdk),
            "ro.build.version.release": release,
            "ro.build.fingerprint": f"{manufacturer.lower()}/{model.lower().replace(' ', '_')}/"
            f"{model.lower().replace(' ', '')}:{release}/UQ1A.240105.004/11206848:user/release-keys",
            "ro.product.cpu.abi": abi,
            "ro.product.cpu.abilist": abilist,
            "ro.serialno": serial,
            "sys.boot_completed": "1",
        }
        if soc_model is not None:
            self.props["ro.soc.model"] = soc_model
        if soc_manufacturer is not None:
            self.props["ro.soc.manufacturer"] = soc_manufacturer
        self.props.update(extra_props or {})

        self.faults: list[Fault] = []
        self.commands: list[str] = []
        self.benchmark_runs: list[BenchmarkRun] = []
        self.max_concurrent_benchmarks = 0
        self.pushes: list[str] = []
        self._running: list[BenchmarkRun] = []
        self._next_run = 0
        self._lock = threading.RLock()
        self._fs: dict[str, _Node] = {}
        self._server: AdbDouble | None = None
        self.transport_id = 0
        for path in (
            *("/data", "/data/local", "/data/local/tmp", "/sdcard"),
            *("/sys", "/sys/class", "/sys/class/thermal"),
        ):
            self._fs[path] = _Node("dir", mode=0o771)
        n = len(self.cpu_max_khz)
        self._put("/sys/devices/system/cpu/possible", f"0-{n - 1}\n".encode())
        for cpu, khz in enumerate(self.cpu_max_khz):
            self._put(f"/sys/devices/system/cpu/cpu{cpu}/cpufreq/cpuinfo_max_freq", f"{khz}\n".encode())
        for i, (zone_type, millideg) in enumerate(thermal_zones):
            self._put(f"/sys/class/thermal/thermal_zone{i}/type", f"{zone_type}\n".encode())
            self._put(f"/sys/class/thermal/thermal_zone{i}/temp", f"{millideg}\n".encode())
        self._put("/sys/class/thermal/cooling_device0/type", b"thermal-cpufreq-0\n")

    # ----------------------------------------------------------------------------------------------
    # Test-facing helpers.

    def add_fault(self, fault: Fault) -> Fault:
        """Arms a fault for the next matching shell command(s); returns it."""
        with self._lock:
            self.faults.append(fault)
        return fault

    def file(self, path: str) -> bytes | None:
        """The content of a file on the phone, or `None`."""
        with self._lock:
            node = self._fs.get(path)
            return node.data if node is not None and node.kind == "file" else None

    def file_mode(self, path: str) -> int | None:
        """The permission bits of a file on the phone, or `None`."""
        with self._lock:
            node = self._fs.get(path)
            return node.mode if node is not None else None

    def put_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        """Creates or replaces a file on the phone."""
        self._put(path, data, mode)

    def put_symlink(self, path: str, target: str) -> None:
        """Creates a symbolic link on the phone (e.g. a lease a dead worker left behind)."""
        with self._lock:
            self._ensure_parents(path)
            self._fs[path] = _Node("link", target=target, mode=0o777, mtime=int(time.time()))

    def symlink_target(self, path: str) -> str | None:
        """The target of a symbolic link on the phone, or `None`."""
        with self._lock:
            node = self._fs.get(path)
            return node.target if node is not None and node.kind == "link" else None

    def listdir(self, path: str) -> list[str]:
        """Names in a directory of the phone."""
        with self._lock:
            return sorted(self._children(path))

    def device_time(self) -> float:
        """The phone's clock (`date +%s`), in seconds."""
        return time.time() + self.clock_offset_s

    # ----------------------------------------------------------------------------------------------
    # File system.

    def _put(self, path: str, data: bytes, mode: int = 0o644) -> None:
        with self._lock:
            self._ensure_parents(path)
            self._fs[path] = _Node("file", data=bytes(data), mode=mode, mtime=int(time.time()))

    def _ensure_parents(self, path: str) -> None:
        parts = path.rstrip("/").split("/")
        for i in range(2, len(parts)):
            parent = "/".join(parts[:i])
            if parent not in self._fs:
                self._fs[parent] = _Node("dir", mode=0o755)

    def _children(self, path: str) -> set[str]:
        prefix = path.rstrip("/") + "/"
        return {p[len(prefix) :].split("/")[0] for p in self._fs if p.startswith(prefix)}

    def _used_bytes(self) -> int:
        return sum(len(n.data) for p, n in self._fs.items() if n.kind == "file" and p.startswith("/data/"))

    def _take_fault(self, command: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.times != 0 and fault.match in command:
                    if fault.times > 0:
                        fault.times -= 1
                    return fault
        return None

    def _v1_bytes(self, data: bytes) -> bytes:
        # Before Android 7, adbd ran every shell v1 command on a pty, whose line discipline turns "\n" into
        # "\r\n"; newer adbd runs non-interactive v1 commands without one.
        return data.replace(b"\n", b"\r\n") if self.sdk < 24 else data

    def _next_thermal_status(self) -> int | None:
        with self._lock:
            status = self.thermal_status
            if isinstance(status, list):
                if len(status) > 1:
                    return status.pop(0)
                return status[0] if status else 0
            return status

    # ----------------------------------------------------------------------------------------------
    # The shell.

    def serve_shell(self, command: str, channel: ShellChannel, *, v2: bool) -> None:
        """Answers one shell service as adbd would: the armed fault for `command`, then its output.

        Shell v2 output is packets (stdout, stderr, the exit status); shell v1 output is both streams in
        the order written, through a pty before Android 7. Every transport calls this, so a new fault or
        output rule works through the in-process double and the real adb server alike.

        Args:
            command: The command line of the `shell:` service.
            channel: Where the output goes.
            v2: Whether the client opened `shell,v2:`.
        """
        fault = self._take_fault(command)
        action = fault.action if fault is not None else None
        if action == "hang":
            while not channel.wait_closed(60.0):
                continue
            return
        if action == "trickle":
            # One byte at a time: a silence timeout never fires, only a wall-clock deadline stops it.
            while True:
                channel.send(_v2_packet(1, b".") if v2 else b".")
                if channel.wait_closed(fault.interval_s):
                    return
        if action == "delay" and channel.wait_closed(fault.delay_s):
            return
        outcome = self.run_shell(command, fault if action in ("exit", "truncate") else None)
        if action in CUTTING_ACTIONS:
            full = outcome.stdout if v2 else self._v1_bytes(outcome.merged)
            partial = full[: int(len(full) * fault.keep_fraction)]
            channel.cut(fault, _v2_packet(1, partial) if v2 and partial else partial)
            return
        if v2:
            data = _v2_packet(1, outcome.stdout) if outcome.stdout else b""
            if outcome.stderr:
                data += _v2_packet(2, outcome.stderr)
            channel.send(data + _v2_packet(3, bytes([outcome.exit_code & 0xFF])))
        else:
            channel.send(self._v1_bytes(outcome.merged))

    def run_shell(self, command: str, applied_fault: Fault | None = None) -> _Outcome:
        """Runs a command line like `sh -c` would (`;` and `&&` lists of simple commands)."""
        with self._lock:
            self.commands.append(command)
        try:
            lexer = shlex.shlex(command, posix=True, punctuation_chars=";&|")
            lexer.whitespace_split = True
            tokens = list(lexer)
        except ValueError as e:
            return _Outcome(stderr=f"/system/bin/sh: syntax error: {e}\n".encode(), exit_code=2)
        commands: list[tuple[str, list[str]]] = []
        joiner = ";"
        current: list[str] = []
        for token in tokens:
            if token in (";", "&&"):
                commands.append((joiner, current))
                joiner, current = token, []
            elif token in ("|", "||", "&", "|&"):
                return _Outcome(stderr=f"fake sh: {token!r} is not supported\n".encode(), exit_code=2)
            else:
                current.append(token)
        commands.append((joiner, current))
        out = _Outcome()
        last = 0
        for joiner, argv in commands:
            if not argv:
                continue
            if joiner == "&&" and last != 0:
                continue
            argv = [a.replace("$?", str(last)) for a in argv]
            fault = (
                applied_fault if applied_fault is not None and applied_fault.match in " ".join(argv) else None
            )
            result = self._run_simple(argv, fault)
            if fault is not None:
                applied_fault = None
            out.stdout += result.stdout
            out.stderr += result.stderr
            out.merged += result.merged
            last = result.exit_code
        out.exit_code = last
        return out

    def _run_simple(self, argv: list[str], fault: Fault | None) -> _Outcome:
        if fault is not None and fault.action == "exit":
            code = 1 if fault.exit_code is None else fault.exit_code
            if fault.output is not None:
                text = fault.output
            elif code >= 128:
                text = "INFO: STARTING!\nINFO: Loaded model\nINFO: Initialized session in 21.905ms.\n"
            else:
                text = "ERROR: Failed to invoke the interpreter\nERROR: Benchmarking failed.\n"
            return _Outcome(stdout=text.encode(), exit_code=code)
        result = self._dispatch(argv)
        if fault is not None and fault.action == "truncate":
            keep = int(len(result.stdout) * fault.keep_fraction)
            return _Outcome(stdout=result.stdout[:keep], exit_code=0)
        return result

    def _dispatch(self, argv: list[str]) -> _Outcome:
        name, args = argv[0], argv[1:]
        handler = getattr(self, f"_cmd_{name}", None)
        if handler is not None and "/" not in name:
            return handler(args)
        if name.startswith("/"):
            return self._exec_path(argv, core_mask=None)
        return _Outcome(stderr=f"/system/bin/sh: {name}: inaccessible or not found\n".encode(), exit_code=127)

    def _cmd_echo(self, args):
        return _Outcome(stdout=(" ".join(args) + "\n").encode())

    def _cmd_getprop(self, args):
        with self._lock:
            if args:
                return _Outcome(stdout=(self.props.get(args[0], "") + "\n").encode())
            text = "".join(f"[{k}]: [{v}]\n" for k, v in sorted(self.props.items()))
        return _Outcome(stdout=text.encode())

    def _cmd_cat(self, args):
        out = _Outcome()
        with self._lock:
            for path in args:
                node = self._fs.get(path)
                if node is None or node.kind != "file":
                    out.error(f"cat: {path}: No such file or directory\n".encode())
                    out.exit_code = 1
                else:
                    out.write(node.data)
        return out

    def _cmd_grep(self, args):
        flags = [a for a in args if a.startswith("-")]
        rest = [a for a in args if not a.startswith("-")]
        if not rest or rest[0] != "." or any(set(f[1:]) - set("sH") for f in flags):
            return _Outcome(stderr=b"fake grep: only `grep [-s] [-H] . FILE...` is supported\n", exit_code=2)
        quiet = any("s" in f for f in flags)
        out = _Outcome(exit_code=1)
        with self._lock:
            for path in rest[1:]:
                node = self._fs.get(path)
                if node is None or node.kind != "file":
                    if not quiet:
                        out.error(f"grep: {path}: No such file or directory\n".encode())
                    out.exit_code = 2
                    continue
                for line in node.data.decode(errors="replace").splitlines():
                    if line:
                        out.write(f"{path}:{line}\n".encode())
                        if out.exit_code == 1:
                            out.exit_code = 0
        return out

    def _cmd_ls(self, args):
        paths = [a for a in args if not a.startswith("-")] or ["/data/local/tmp"]
        out = _Outcome()
        with self._lock:
            for path in paths:
                node = self._fs.get(path.rstrip("/"))
                if node is None:
                    out.error(f"ls: {path}: No such file or directory\n".encode())
                    out.exit_code = 1
                    continue
                out.write("".join(f"{name}\n" for name in sorted(self._children(path))).encode())
        return out

    def _cmd_dumpsys(self, args):
        if args[:1] != ["thermalservice"]:
            return _Outcome(stdout=f"Can't find service: {' '.join(args)}\n".encode())
        status = self._next_thermal_status()
        if status is None:
            return _Outcome(stdout=b"Can't find service: thermalservice\n")
        temps = "".join(
            f"\tTemperature{{mValue={value}, mType={kind}, mName={name}, mStatus={status}}}\n"
            for name, kind, value in self.hal_temperatures
        )
        text = (
            "IsStatusOverride: false\nThermalEventListeners:\n\tcallbacks: 1\n\tkilled: false\n"
            f"\tbroadcasts count: -1\nThermal Status: {status}\nCached temperatures:\n{temps}"
            "HAL Ready: true\nHAL connection:\n\tThermalHAL 2.0 connected: yes\n"
            f"Current temperatures from HAL:\n{temps}Current cooling devices from HAL:\n"
            "\tCoolingDevice{mValue=0, mType=2, mName=battery}\n"
        )
        return _Outcome(stdout=text.encode())

    def _cmd_sha256sum(self, args):
        out = _Outcome()
        with self._lock:
            for path in args:
                node = self._fs.get(path)
                if node is None or node.kind != "file":
                    out.error(f"sha256sum: {path}: No such file or directory\n".encode())
                    out.exit_code = 1
                else:
                    out.write(f"{hashlib.sha256(node.data).hexdigest()}  {path}\n".encode())
        return out

    def _cmd_chmod(self, args):
        if len(args) < 2:
            return _Outcome(stderr=b"chmod: Need 2 arguments\n", exit_code=1)
        try:
            mode = int(args[0], 8)
        except ValueError:
            return _Outcome(stderr=f"chmod: bad mode '{args[0]}'\n".encode(), exit_code=1)
        with self._lock:
            for path in args[1:]:
                node = self._fs.get(path)
                if node is None:
                    return _Outcome(
                        stderr=f"chmod: {path}: No such file or directory\n".encode(), exit_code=1
                    )
                node.mode = mode
        return _Outcome()

    def _cmd_date(self, args):
        if args != ["+%s"]:
            return _Outcome(stdout=time.strftime("%a %b %d %H:%M:%S UTC %Y\n").encode())
        return _Outcome(stdout=f"{int(self.device_time())}\n".encode())

    def _cmd_readlink(self, args):
        with self._lock:
            node = self._fs.get(args[-1]) if args else None
            if node is None or node.kind != "link":
                return _Outcome(exit_code=1)
            return _Outcome(stdout=(node.target + "\n").encode())

    def _cmd_ln(self, args):
        if len(args) != 3 or args[0] != "-s":
            return _Outcome(stderr=b"fake ln: only `ln -s TARGET LINK` is supported\n", exit_code=1)
        target, link = args[1], args[2]
        parent = link.rsplit("/", 1)[0] or "/"
        with self._lock:
            if link in self._fs:
                reason = "File exists"
            elif parent not in self._fs or self._fs[parent].kind != "dir":
                reason = "No such file or directory"
            elif parent == "/sdcard" or parent.startswith("/sdcard/"):
                # Shared storage (sdcardfs, FUSE) has no symbolic links.
                reason = "Operation not permitted"
            elif parent.startswith("/data") and self.free_bytes < _BLOCK_BYTES:
                # A new link may need a block (for its directory entry, or a target too long for the inode):
                # the double assumes it always does.
                reason = "No space left on device"
            else:
                self.put_symlink(link, target)
                return _Outcome()
        # toybox's message, on stderr, exit status 1.
        message = f"ln: cannot create symbolic link from '{target}' to '{link}': {reason}\n"
        return _Outcome(stderr=message.encode(), exit_code=1)

    def _cmd_mv(self, args):
        paths = [a for a in args if not a.startswith("-")]
        if len(paths) != 2:
            return _Outcome(stderr=b"fake mv: only `mv [-f] SRC DST` is supported\n", exit_code=1)
        src, dst = paths
        with self._lock:
            node = self._fs.get(src)
            if node is None:
                return _Outcome(stderr=f"mv: {src}: No such file or directory\n".encode(), exit_code=1)
            if dst in self._fs and self._fs[dst].kind == "dir":
                return _Outcome(stderr=f"fake mv: {dst} is a directory\n".encode(), exit_code=1)
            self._fs[dst] = self._fs.pop(src)
        return _Outcome()

    def _cmd_rm(self, args):
        force = any(a.startswith("-") and "f" in a for a in args)
        out = _Outcome()
        with self._lock:
            for path in (a for a in args if not a.startswith("-")):
                node = self._fs.get(path)
                if node is None or node.kind == "dir":
                    if not force or (node is not None and node.kind == "dir"):
                        out.error(f"rm: {path}: No such file or directory\n".encode())
                        out.exit_code = 1
                    continue
                del self._fs[path]
        return out

    def _cmd_mkdir(self, args):
        with self._lock:
            for path in (a for a in args if not a.startswith("-")):
                if path in self._fs and "-p" not in args:
                    return _Outcome(stderr=f"mkdir: {path}: File exists\n".encode(), exit_code=1)
                self._ensure_parents(path + "/x")
        return _Outcome()

    def _cmd_pidof(self, args):
        with self._lock:
            pids = [str(10000 + run.index) for run in self._running if run.argv[0].rsplit("/", 1)[-1] in args]
        if not pids:
            return _Outcome(exit_code=1)
        return _Outcome(stdout=(" ".join(pids) + "\n").encode())

    def _cmd_df(self, args):
        used = self._used_bytes() // 1024
        free = self.free_bytes // 1024
        text = (
            "Filesystem      1K-blocks    Used Available Use% Mounted on\n"
            f"/dev/block/dm-9 {used + free:>9} {used:>7} {free:>9} "
            f"{100 * used // max(1, used + free)}% /data\n"
        )
        return _Outcome(stdout=text.encode())

    def _cmd_taskset(self, args):
        if len(args) < 2:
            return _Outcome(stderr=b"taskset: Need 1 argument\n", exit_code=1)
        try:
            mask = int(args[0], 16)
        except ValueError:
            return _Outcome(stderr=f"taskset: bad mask '{args[0]}'\n".encode(), exit_code=1)
        allowed = sum(1 << cpu for cpu in self.allowed_cpus)
        # Linux intersects the mask with the cpuset; only an empty intersection is refused.
        if mask & allowed == 0:
            return _Outcome(stderr=b"taskset: sched_setaffinity: Invalid argument\n", exit_code=1)
        if not args[1].startswith("/"):
            return self._dispatch(args[1:])
        return self._exec_path(args[1:], core_mask=args[0])

    def _exec_path(self, argv: list[str], core_mask: str | None) -> _Outcome:
        path = argv[0]
        with self._lock:
            node = self._fs.get(path)
            if node is None:
                return _Outcome(
                    stderr=f"/system/bin/sh: {path}: inaccessible or not found\n".encode(), exit_code=127
                )
            if node.kind != "file" or not node.mode & 0o111:
                return _Outcome(
                    stderr=f"/system/bin/sh: {path}: can't execute: Permission denied\n".encode(),
                    exit_code=126,
                )
        return self._run_benchmark(argv, core_mask)

    def _run_benchmark(self, argv: list[str], core_mask: str | None) -> _Outcome:
        flags = {}
        for arg in argv[1:]:
            if arg.startswith("--") and "=" in arg:
                key, value = arg[2:].split("=", 1)
                flags[key] = value
        graph = flags.get("graph", "")
        with self._lock:
            node = self._fs.get(graph)
            if node is None or node.kind != "file":
                text = (
                    f"INFO: STARTING!\nINFO: Graph: [{graph}]\nERROR: Could not open '{graph}'.\n"
                    f"ERROR: Failed to mmap model {graph}\nERROR: Benchmarking failed.\n"
                )
                return _Outcome(stdout=text.encode(), exit_code=1)
            graph_sha = hashlib.sha256(node.data).hexdigest()
            run = BenchmarkRun(
                index=self._next_run,
                argv=list(argv),
                core_mask=core_mask,
                flags=flags,
                graph_sha256=graph_sha,
                latency_ms=0.0,
                started=time.monotonic(),
            )
            self._next_run += 1
            self._running.append(run)
            self.benchmark_runs.append(run)
            self.max_concurrent_benchmarks = max(self.max_concurrent_benchmarks, len(self._running))
        bench = self.benchmark
        try:
            latency = bench.latency_ms(run) if callable(bench.latency_ms) else float(bench.latency_ms)
            use_xnnpack = flags.get("use_xnnpack", "true") == "true"
            profile = [(name, kind, share * latency * 1000) for name, kind, share in bench.ops]
            if bench.model_op_costs is not None and bench.model_error is None:
                profile = model_op_profile(node.data, bench.model_op_costs, use_xnnpack=use_xnnpack)
                latency += sum(us for _, _, us in profile) / 1000.0
            run.latency_ms = latency
            if bench.duration_s > 0:
                time.sleep(bench.duration_s)
            if bench.model_error is not None:
                return _Outcome(stdout=_MODEL_ERROR_OUTPUTS[bench.model_error].encode(), exit_code=1)
            rng = random.Random(bench.seed * 1_000_003 + run.index)

            def times(n: int) -> list[int]:
                return [
                    max(1, int(rng.gauss(latency, latency * bench.relative_std) * 1000)) for _ in range(n)
                ]

            warmup = times(max(1, int(flags.get("warmup_runs", "1"))))
            # Like the real tool: at least --num_runs, and more until they add up to --min_secs (default 1).
            min_runs = math.ceil(float(flags.get("min_secs", "1")) * 1000 / max(latency, 1e-3))
            runs = times(min(max(1, int(flags.get("num_runs", "50")), min_runs), _MAX_FAKE_RUNS))
            runs = [t * 100 if rng.random() < bench.preempted_share else t for t in runs]
            text = fake_benchmark_output(
                bench.generation,
                graph=graph,
                warmup_us=warmup,
                runs_us=runs,
                init_us=int(bench.init_ms * 1000),
                threads=int(flags.get("num_threads", "1")),
                use_xnnpack=use_xnnpack,
                op_profile=profile if flags.get("enable_op_profiling") == "true" else None,
            )
            return _Outcome(stdout=text.encode())
        finally:
            with self._lock:
                run.finished = time.monotonic()
                self._running.remove(run)

    # ----------------------------------------------------------------------------------------------
    # Sync.

    def sync_stat(self, path: str) -> tuple[int, int, int]:
        with self._lock:
            node = self._fs.get(path)
            if node is None:
                return 0, 0, 0
            kind = {"file": stat.S_IFREG, "dir": stat.S_IFDIR, "link": stat.S_IFLNK}[node.kind]
            size = (
                len(node.data) if node.kind == "file" else (len(node.target) if node.kind == "link" else 4096)
            )
            return kind | node.mode, size, node.mtime

    def sync_list(self, path: str) -> list[tuple[str, int, int, int]]:
        with self._lock:
            if path.rstrip("/") not in self._fs:
                return []
            entries = []
            for name in sorted(self._children(path)):
                mode, size, mtime = self.sync_stat(path.rstrip("/") + "/" + name)
                entries.append((name, mode, size, mtime))
            return entries

    def sync_write(self, path: str, data: bytes, mode: int, mtime: int) -> str | None:
        """Stores a pushed file; returns an error message instead when it cannot."""
        with self._lock:
            parent = path.rsplit("/", 1)[0] or "/"
            if parent in self._fs and self._fs[parent].kind != "dir":
                return f"secure_mkdirs failed: {parent}: Not a directory"
            # adbd creates missing parent directories (the `fixed_push_mkdir` feature).
            self._ensure_parents(path)
            existing = self._fs.get(path)
            replaced = len(existing.data) if existing is not None and existing.kind == "file" else 0
            if len(data) - replaced > self.free_bytes:
                return "write failed: No space left on device"
            self.free_bytes -= len(data) - replaced
            self._fs[path] = _Node("file", data=data, mode=mode & 0o7777, mtime=mtime)
            self.pushes.append(path)
        return None

    def sync_read(self, path: str) -> bytes | None:
        with self._lock:
            node = self._fs.get(path)
            return node.data if node is not None and node.kind == "file" else None


class _ConnectionClosedError(Exception):
    pass


class AdbDouble:
    """A threaded loopback adb server answering for a set of `FakePhone`s.

    Args:
        phones: The phones plugged in at the start.
        host: Address to listen on (loopback by default).
        port: Port to listen on (0: a free port, see `port`).
        server_version: The adb protocol version reported to `host:version` (adbutils uses
            `host:tport:serial:` from 41 on, `host:transport:` below).

    Example:

    ```python
    with AdbDouble([FakePhone("A"), FakePhone("B", state="unauthorized")]) as server:
        client = adbutils.AdbClient(port=server.port)
        [(d.serial, d.state) for d in client.list()]  # [("A", "device"), ("B", "unauthorized")]
    ```
    """

    def __init__(
        self,
        phones: Iterable[FakePhone] = (),
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        server_version: int = ADB_SERVER_VERSION,
    ):
        self.host = host
        self.server_version = server_version
        self.requests: list[str] = []
        self._phones: dict[str, FakePhone] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()
        self._next_transport = 1
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((host, port))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self._accept_thread: threading.Thread | None = None
        for phone in phones:
            self.add_phone(phone)

    # ----------------------------------------------------------------------------------------------
    # Life cycle.

    def start(self) -> AdbDouble:
        """Starts answering (idempotent); returns self."""
        if self._accept_thread is None:
            self._accept_thread = threading.Thread(target=self._accept_loop, name="adb-double", daemon=True)
            self._accept_thread.start()
        return self

    def stop(self) -> None:
        """Stops answering and closes every open connection (hung commands end)."""
        self._stopping.set()
        close_socket(self._listener)
        with self._lock:
            connections = list(self._connections)
            threads = list(self._threads)
        for conn in connections:
            close_socket(conn)
        if self._accept_thread is not None:
            self._accept_thread.join(timeout=5)
        for thread in threads:
            thread.join(timeout=5)

    def __enter__(self) -> AdbDouble:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ----------------------------------------------------------------------------------------------
    # Phones.

    def add_phone(self, phone: FakePhone) -> FakePhone:
        """Plugs a phone in; returns it."""
        with self._lock:
            phone._server = self
            phone.transport_id = self._next_transport
            self._next_transport += 1
            self._phones[phone.serial] = phone
        return phone

    def remove_phone(self, serial: str) -> None:
        """Unplugs a phone: it disappears from the device list and its transports fail."""
        with self._lock:
            self._phones.pop(serial, None)

    def phone(self, serial: str) -> FakePhone:
        """The plugged-in phone with this serial."""
        with self._lock:
            return self._phones[serial]

    @property
    def phones(self) -> list[FakePhone]:
        with self._lock:
            return list(self._phones.values())

    # ----------------------------------------------------------------------------------------------
    # Protocol.

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), name="adb-double-conn", daemon=True)
            with self._lock:
                self._connections.add(conn)
                self._threads.add(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            self._handle(conn)
        except (_ConnectionClosedError, OSError):
            pass
        finally:
            close_socket(conn)
            with self._lock:
                self._connections.discard(conn)
                self._threads.discard(threading.current_thread())

    def _handle(self, conn: socket.socket) -> None:
        request = _read_request(conn)
        with self._lock:
            self.requests.append(request)
        if request == "host:version":
            conn.sendall(b"OKAY" + _block(f"{self.server_version:04x}"))
        elif request in ("host:devices", "host:devices-l"):
            conn.sendall(b"OKAY" + _block(self._device_lines(long=request.endswith("-l"))))
        elif request == "host:kill":
            conn.sendall(b"OKAY")
        elif request.startswith(("host-serial:", "host-transport-id:")):
            self._host_query(conn, request)
        elif request.startswith(("host:tport:", "host:transport", "host:transport-id:")):
            phone = self._open_transport(conn, request)
            if phone is not None:
                self._service(conn, phone, _read_request(conn))
        else:
            _fail(conn, f"unknown host service '{request}'")

    def _device_lines(self, long: bool) -> str:
        lines = []
        for phone in self.phones:
            if long:
                props = phone.props
                lines.append(
                    f"{phone.serial:<22} {phone.state} usb:1-1 product:{props['ro.product.name']} "
                    f"model:{props['ro.product.model'].replace(' ', '_')} "
                    f"device:{props['ro.product.device']} "
                    f"transport_id:{phone.transport_id}"
                )
            else:
                lines.append(f"{phone.serial}\t{phone.state}")
        return "".join(line + "\n" for line in lines)

    def _find(self, conn: socket.socket, selector: str) -> FakePhone | None:
        with self._lock:
            phones = list(self._phones.values())
        if selector == "any":
            ready = [p for p in phones if p.state == "device"]
            if len(ready) != 1:
                _fail(conn, "more than one device/emulator" if ready else "no devices/emulators found")
                return None
            return ready[0]
        if selector.startswith("id:"):
            found = [p for p in phones if str(p.transport_id) == selector[3:]]
        else:
            found = [p for p in phones if p.serial == selector]
        if not found:
            _fail(conn, f"device '{selector}' not found")
            return None
        phone = found[0]
        if phone.state == "offline":
            _fail(conn, "device offline")
            return None
        if phone.state == "unauthorized":
            _fail(conn, _UNAUTHORIZED_MESSAGE)
            return None
        return phone

    def _host_query(self, conn: socket.socket, request: str) -> None:
        if request.startswith("host-serial:"):
            # The serial itself may contain ':' (e.g. "192.168.1.5:5555"): the command is the last field.
            selector, _, command = request[len("host-serial:") :].rpartition(":")
        else:
            number, _, command = request[len("host-transport-id:") :].partition(":")
            selector = f"id:{number}"
        if command == "get-state":
            with self._lock:
                found = [p for p in self._phones.values() if p.serial == selector]
            if not found:
                _fail(conn, f"device '{selector}' not found")
                return
            conn.sendall(b"OKAY" + _block(found[0].state))
            return
        phone = self._find(conn, selector)
        if phone is None:
            return
        if command == "features":
            features = "cmd,stat_v2,ls_v2,fixed_push_mkdir,apex,abb,fixed_push_symlink_timestamp,abb_exec"
            if phone.shell_v2:
                features = "shell_v2," + features
            conn.sendall(b"OKAY" + _block(features))
        elif command == "get-serialno":
            conn.sendall(b"OKAY" + _block(phone.serial))
        else:
            _fail(conn, f"unsupported host-serial command '{command}'")

    def _open_transport(self, conn: socket.socket, request: str) -> FakePhone | None:
        if request.startswith("host:tport:serial:"):
            phone = self._find(conn, request[len("host:tport:serial:") :])
            send_id = True
        elif request in ("host:tport:any", "host:transport-any"):
            phone = self._find(conn, "any")
            send_id = request.startswith("host:tport:")
        elif request.startswith("host:transport-id:"):
            phone = self._find(conn, "id:" + request[len("host:transport-id:") :])
            send_id = False
        elif request.startswith("host:transport:"):
            phone = self._find(conn, request[len("host:transport:") :])
            send_id = False
        else:
            _fail(conn, f"unknown transport request '{request}'")
            return None
        if phone is None:
            return None
        conn.sendall(b"OKAY" + (struct.pack("<Q", phone.transport_id) if send_id else b""))
        return phone

    def _alive(self, phone: FakePhone) -> bool:
        with self._lock:
            return self._phones.get(phone.serial) is phone and phone.state == "device"

    def _service(self, conn: socket.socket, phone: FakePhone, request: str) -> None:
        if not self._alive(phone):
            _fail(conn, "device offline")
            return
        if request.startswith("shell,v2:") or request.startswith("shell,v2,raw:"):
            if not phone.shell_v2:
                _fail(conn, "closed")
                return
            conn.sendall(b"OKAY")
            self._shell(conn, phone, request.split(":", 1)[1], v2=True)
        elif request.startswith("shell:"):
            conn.sendall(b"OKAY")
            self._shell(conn, phone, request[len("shell:") :], v2=False)
        elif request == "sync:":
            conn.sendall(b"OKAY")
            self._sync(conn, phone)
        else:
            _fail(conn, f"unknown service '{request}'")

    def _shell(self, conn: socket.socket, phone: FakePhone, command: str, v2: bool) -> None:
        phone.serve_shell(command, _SocketChannel(self, conn, phone), v2=v2)

    def _client_closed(self, conn: socket.socket, seconds: float) -> bool:
        """Waits up to `seconds`; True as soon as the client closes the connection or the server stops."""
        deadline = time.monotonic() + seconds
        while not self._stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                readable, _, _ = select.select([conn], [], [], min(remaining, 0.05))
                if readable and not conn.recv(4096):
                    return True
            except (OSError, ValueError):
                return True
        return True

    def _sync(self, conn: socket.socket, phone: FakePhone) -> None:
        while True:
            header = _recv_exact(conn, 8)
            command, length = header[:4], struct.unpack("<I", header[4:])[0]
            argument = _recv_exact(conn, length).decode("utf-8", errors="replace")
            if command == b"QUIT":
                return
            if not self._alive(phone):
                raise _ConnectionClosedError
            if command == b"STAT":
                conn.sendall(b"STAT" + struct.pack("<III", *phone.sync_stat(argument)))
            elif command == b"LIST":
                for name, mode, size, mtime in phone.sync_list(argument):
                    encoded = name.encode()
                    conn.sendall(b"DENT" + struct.pack("<IIII", mode, size, mtime, len(encoded)) + encoded)
                conn.sendall(b"DONE" + struct.pack("<IIII", 0, 0, 0, 0))
            elif command == b"RECV":
                data = phone.sync_read(argument)
                if data is None:
                    conn.sendall(b"FAIL" + _le_block("No such file or directory"))
                    continue
                for start in range(0, len(data), _SYNC_CHUNK):
                    chunk = data[start : start + _SYNC_CHUNK]
                    conn.sendall(b"DATA" + struct.pack("<I", len(chunk)) + chunk)
                conn.sendall(b"DONE" + struct.pack("<I", 0))
            elif command == b"SEND":
                path, _, mode_text = argument.rpartition(",")
                mode = int(mode_text) if mode_text.isdigit() else 0o644
                chunks = []
                while True:
                    header = _recv_exact(conn, 8)
                    kind, value = header[:4], struct.unpack("<I", header[4:])[0]
                    if kind == b"DATA":
                        if value > _SYNC_CHUNK:
                            conn.sendall(
                                b"FAIL" + _le_block(f"sync data chunk of {value} bytes is too large")
                            )
                            raise _ConnectionClosedError
                        chunks.append(_recv_exact(conn, value))
                    elif kind == b"DONE":
                        break
                    else:
                        conn.sendall(b"FAIL" + _le_block(f"unexpected sync message {kind!r}"))
                        raise _ConnectionClosedError
                if not self._alive(phone):
                    raise _ConnectionClosedError
                error = phone.sync_write(path, b"".join(chunks), mode, value)
                if error is None:
                    conn.sendall(b"OKAY" + struct.pack("<I", 0))
                else:
                    conn.sendall(b"FAIL" + _le_block(error))
            else:
                conn.sendall(b"FAIL" + _le_block(f"unknown sync command {command!r}"))
                return


class _SocketChannel:
    """A shell service's output on a host-protocol socket of the double (a `ShellChannel`)."""

    def __init__(self, double: AdbDouble, conn: socket.socket, phone: FakePhone):
        self.double, self.conn, self.phone = double, conn, phone

    def send(self, data: bytes) -> None:
        self.conn.sendall(data)

    def wait_closed(self, seconds: float) -> bool:
        return self.double._client_closed(self.conn, seconds)

    def cut(self, fault: Fault, partial: bytes) -> None:
        if fault.action == "disappear":
            self.double.remove_phone(self.phone.serial)
        elif fault.action in ("offline", "unauthorized"):
            self.phone.state = fault.action
        if partial:
            self.conn.sendall(partial)
        # The adb server closes the socket when the device's transport dies: a clean end of stream, with
        # no exit status (v2) and no exit marker (v1).
        close_socket(self.conn)
        raise _ConnectionClosedError


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise _ConnectionClosedError
        data += chunk
    return data


def _read_request(conn: socket.socket) -> str:
    length = int(_recv_exact(conn, 4).decode("ascii"), 16)
    return _recv_exact(conn, length).decode("utf-8", errors="replace")


def _block(text: str) -> bytes:
    data = text.encode()
    return f"{len(data):04x}".encode() + data


def _le_block(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<I", len(data)) + data


def _fail(conn: socket.socket, message: str) -> None:
    conn.sendall(b"FAIL" + _block(message))


def _v2_packet(kind: int, data: bytes) -> bytes:
    return bytes([kind]) + struct.pack("<I", len(data)) + data


def close_socket(conn: socket.socket) -> None:
    """Shuts a socket down and closes it, whatever state it is in.

    close() alone does not wake a thread blocked in accept() or recv() on Linux; shutdown() does.
    """
    with contextlib.suppress(OSError):
        conn.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        conn.close()
