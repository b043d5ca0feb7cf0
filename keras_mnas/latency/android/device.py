"""Facts about a phone: what its adb output says, and what its benchmark binary is built for.

Pure functions and records, no adb traffic: `ThermalState` and `AndroidDeviceInfo`, the parsers of
`getprop`, `/sys/devices/system/cpu/possible` and `dumpsys thermalservice` output, and `elf_abi`, which reads
the Android ABI of a `benchmark_model` binary. The adb side (`keras_mnas.latency.android.adb`) fills them in.

Example:

```python
with open("android_aarch64_benchmark_model", "rb") as f:
    elf_abi(f.read(64))  # "arm64-v8a"
```
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from typing import Any

from keras_mnas.latency.errors import DeviceError, SetupError

# ELF e_machine values of the Android ABIs.
_ELF_MACHINES = {183: "arm64-v8a", 40: "armeabi-v7a", 62: "x86_64", 3: "x86", 243: "riscv64"}
_ABI_BITS = {"arm64-v8a": 64, "armeabi-v7a": 32, "armeabi": 32, "x86_64": 64, "x86": 32, "riscv64": 64}
PREBUILT_NAMES = {
    "arm64-v8a": "android_aarch64_benchmark_model",
    "armeabi-v7a": "android_arm_benchmark_model",
    "x86_64": "android_x86_64_benchmark_model",
    "x86": "android_x86_benchmark_model",
}

# dumpsys thermalservice's temperature types (android.os.Temperature).
_TEMPERATURE_TYPES = {0: "cpu", 1: "gpu", 2: "battery", 3: "skin", 4: "usb_port", 5: "power_amplifier"}

# ----------------------------------------------------------------------------------------------------
# Binaries.


def elf_abi(data: bytes) -> str:
    """The Android ABI an ELF executable is built for.

    Args:
        data: The executable's bytes (the first 20 are enough).

    Returns:
        `"arm64-v8a"`, `"armeabi-v7a"`, `"x86_64"`, `"x86"` or `"riscv64"`.

    Raises:
        SetupError: if the bytes are not an ELF executable for one of those machines.

    Example:

    ```python
    with open("android_aarch64_benchmark_model", "rb") as f:
        elf_abi(f.read(64))  # "arm64-v8a"
    ```
    """
    if len(data) < 20 or data[:4] != b"\x7fELF":
        head = data[:4]
        hint = (
            " (a Mach-O executable: built for macOS?)"
            if head in (b"\xcf\xfa\xed\xfe", b"\xca\xfe\xba\xbe")
            else ""
        )
        raise SetupError(
            f"Expected benchmark_model to be an Android ELF executable; its first bytes are {head!r}{hint}. "
            "Download the prebuilt binary for the phone's ABI or build it with bazel (see 'Measuring on your "
            "phone' in the keras-mnas documentation)."
        )
    byteorder = "little" if data[5] == 1 else "big"
    machine = int.from_bytes(data[18:20], byteorder)
    bits = 64 if data[4] == 2 else 32
    abi = _ELF_MACHINES.get(machine)
    if abi is None or _ABI_BITS[abi] != bits:
        raise SetupError(
            f"benchmark_model is a {bits}-bit ELF executable for machine type {machine}, which is not an "
            f"Android ABI keras-mnas knows ({sorted(set(_ELF_MACHINES.values()))})."
        )
    return abi


def abi_compatible(binary_abi: str, device_abis: Sequence[str]) -> bool:
    if binary_abi == "armeabi-v7a":
        return any(a in ("armeabi-v7a", "armeabi") for a in device_abis)
    return binary_abi in device_abis


# ----------------------------------------------------------------------------------------------------
# Facts about a phone.


@dataclasses.dataclass(frozen=True)
class ThermalState:
    """A phone's thermal state at one moment.

    Attributes:
        status: `Thermal Status` of `dumpsys thermalservice` (0 none, 1 light, 2 moderate, 3 severe,
            4 critical, 5 emergency, 6 shutdown), or `None` when the phone has no thermal service.
        temperatures_c: Temperatures by sensor name, in degrees Celsius.
        cpu_max_c: The hottest CPU sensor, or `None`.
        source: `"thermalservice"`, `"thermal_zones"` or `"none"`.
    """

    status: int | None
    temperatures_c: dict[str, float]
    cpu_max_c: float | None
    source: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class AndroidDeviceInfo:
    """What `list_devices` reports about one phone.

    Attributes:
        serial: The adb serial.
        state: adb's state: `"device"` (usable), `"offline"`, `"unauthorized"`, ...
        adb_server: `"host:port"` of the adb server the phone is reached through.
        model, manufacturer: `ro.product.model` and `ro.product.manufacturer`.
        soc: The system on chip (`ro.soc.manufacturer ro.soc.model` on Android 12+, else
            `ro.board.platform`).
        sdk: The Android API level (`ro.build.version.sdk`).
        android_release: `ro.build.version.release`, e.g. `"14"`.
        abi: The primary ABI (`ro.product.cpu.abi`), which `benchmark_model` must be built for.
        abilist: All ABIs the phone runs.
        fingerprint: `ro.build.fingerprint`.
        cpu_max_khz: Maximum frequency of each CPU.
        big_cores: The CPUs with the highest maximum frequency.
        thermal: The thermal state, or `None` when it could not be read.
        health: `"ok"`, `"hot"`, `"offline"`, `"unauthorized"`, `"error"`, ...
        error: What went wrong, when `health` is not `"ok"`.
    """

    serial: str
    state: str
    adb_server: str
    model: str = ""
    manufacturer: str = ""
    soc: str = ""
    sdk: int | None = None
    android_release: str = ""
    abi: str = ""
    abilist: tuple[str, ...] = ()
    fingerprint: str = ""
    cpu_max_khz: dict[int, int] = dataclasses.field(default_factory=dict)
    big_cores: tuple[int, ...] = ()
    thermal: ThermalState | None = None
    health: str = "ok"
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        data = dataclasses.asdict(self)
        data["cpu_max_khz"] = {str(k): v for k, v in self.cpu_max_khz.items()}
        data["abilist"] = list(self.abilist)
        data["big_cores"] = list(self.big_cores)
        return data


_PROP_LINE = re.compile(r"^\[(?P<key>[^\]]+)\]: \[(?P<value>.*)\]\s*$")
_THERMAL_STATUS = re.compile(r"^\s*Thermal Status:\s*(\d+)", re.MULTILINE)
_TEMPERATURE = re.compile(r"Temperature\{mValue=([-+0-9.eE]+), mType=(-?\d+), mName=([^,}]+)")


def parse_props(text: str) -> dict[str, str]:
    props = {}
    for line in text.splitlines():
        match = _PROP_LINE.match(line)
        if match:
            props[match["key"]] = match["value"]
    return props


def parse_cpu_list(text: str) -> list[int]:
    cpus: list[int] = []
    for part in text.strip().split(","):
        part = part.strip()
        if not part:
            continue
        first, _, last = part.partition("-")
        try:
            cpus.extend(range(int(first), int(last or first) + 1))
        except ValueError:
            raise DeviceError(f"Unexpected content of /sys/devices/system/cpu/possible: {text!r}.") from None
    return cpus


def parse_thermalservice(text: str) -> ThermalState | None:
    match = _THERMAL_STATUS.search(text)
    if match is None:
        return None
    # Prefer the live readings; older builds only show the cached ones.
    section = text.split("Current temperatures from HAL:", 1)[-1].split("Current cooling devices", 1)[0]
    found = _TEMPERATURE.findall(section) or _TEMPERATURE.findall(text)
    temperatures: dict[str, float] = {}
    cpu = []
    for value, kind, name in found:
        try:
            celsius = float(value)
        except ValueError:
            continue
        if not math.isfinite(celsius):
            continue
        temperatures[name.strip()] = celsius
        if _TEMPERATURE_TYPES.get(int(kind)) == "cpu":
            cpu.append(celsius)
    return ThermalState(int(match.group(1)), temperatures, max(cpu) if cpu else None, "thermalservice")


def zone_celsius(raw: str) -> float | None:
    try:
        value = float(raw)
    except ValueError:
        return None
    # Most kernels report millidegrees; a few report degrees.
    celsius = value / 1000.0 if abs(value) >= 1000 else value
    return celsius if -40.0 <= celsius <= 150.0 else None




def soc_name(props: dict[str, str]) -> str:
    model = props.get("ro.soc.model", "")
    maker = props.get("ro.soc.manufacturer", "")
    if model:
        return f"{maker} {model}".strip()
    return props.get("ro.board.platform") or props.get("ro.hardware", "")


def int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def describe_thermal(thermal: ThermalState) -> str:
    text = "no thermal service" if thermal.status is None else f"thermal status {thermal.status}"
    if thermal.cpu_max_c is not None:
        text += f", CPU {thermal.cpu_max_c:.1f} C"
    return text

