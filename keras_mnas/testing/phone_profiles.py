"""Phones of three Android generations, as their adbd, shell tools and system services answer.

A `PhoneProfile` describes what differs between generations where keras-mnas looks:

- adbd: the transport version, the largest payload, and the features of its banner. Android 6 has no
  features at all (shell v2 and `stat_v2` came later), so its shell output carries no exit status;
- the thermal service: none before Android 10 (only `/sys/class/thermal`), a HIDL thermal HAL 2.0 on
  Android 10, the AIDL HAL on Android 14, each with the `dumpsys thermalservice` text of its generation;
- the tools: Android 6 has no `sha256sum` and prints toolbox `df` columns (`Size Used Free Blksize`); later
  toybox prints `1K-blocks Used Available Use% Mounted on`;
- cpufreq: one directory per CPU on Android 6's kernels, plus `cpufreq/policyN` per cluster later;
- thermal zones: old Qualcomm kernels name them `tsens_tz_sensorN` and report whole degrees.

`PROFILES` holds the three: `"android6"` (a Nexus 5X on 6.0.1), `"android10"` (a Pixel 4 on 10) and
`"android14"` (a Pixel 7 on 14). `RealAdbServer.add_phone` reads a profile phone's adbd settings from it.

Example:

```python
from keras_mnas.testing import PROFILES

old = PROFILES["android6"].phone("OLD1")
twins = [PROFILES["android14"].phone(serial) for serial in ("P7A", "P7B")]  # two phones of one model
```
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

from keras_mnas.testing.adb_double import FakePhone, _Outcome
from keras_mnas.testing.adbd import A_VERSION, A_VERSION_MIN, ANDROID_10_FEATURES, MAX_PAYLOAD


@dataclasses.dataclass(frozen=True)
class PhoneProfile:
    """What one Android generation's phone answers.

    Args:
        name: The profile's name.
        codename: `ro.product.name` and `ro.product.device`.
        build_id: The build id and number of `ro.build.fingerprint`.
        release: `ro.build.version.release`.
        sdk: `ro.build.version.sdk`.
        model, manufacturer, board: The phone's product properties.
        soc_model, soc_manufacturer: `ro.soc.*` (Android 12+ only; `None` before).
        cpu_max_khz: `cpuinfo_max_freq` of each CPU.
        clusters: The first CPU of each frequency domain (one `cpufreq/policyN` each), or `()` for a kernel
            without policy directories.
        features: The adbd banner's features.
        transport_version: The adb transport protocol version of its adbd.
        max_payload: The largest payload its adbd accepts.
        thermal_hal: `None` (no thermal service), `"2.0"` (HIDL, Android 10-12) or `"AIDL 1"` (Android 13+).
        toybox: Whether the shell tools are toybox's (`sha256sum`, its `df` columns) or the old toolbox's.
        thermal_zones: `(type, raw temp)` of each `/sys/class/thermal/thermal_zoneN`.
        hal_temperatures: `(name, type, celsius)` that the thermal service reports.
    """

    name: str
    codename: str
    build_id: str
    release: str
    sdk: int
    model: str
    manufacturer: str
    board: str
    soc_model: str | None
    soc_manufacturer: str | None
    cpu_max_khz: tuple[int, ...]
    clusters: tuple[int, ...]
    features: tuple[str, ...]
    transport_version: int
    max_payload: int
    thermal_hal: str | None
    toybox: bool
    thermal_zones: tuple[tuple[str, int], ...]
    hal_temperatures: tuple[tuple[str, int, float], ...] = ()

    def phone(self, serial: str, **overrides: Any) -> ProfilePhone:
        """A new phone of this profile; `overrides` go to `FakePhone` (e.g. `benchmark=`, `free_bytes=`).

        Example:

        ```python
        phone = PROFILES["android10"].phone("P4", benchmark=FakeBenchmark(latency_ms=9.0))
        ```
        """
        settings: dict[str, Any] = dict(
            model=self.model,
            manufacturer=self.manufacturer,
            soc_model=self.soc_model,
            soc_manufacturer=self.soc_manufacturer,
            board=self.board,
            sdk=self.sdk,
            release=self.release,
            cpu_max_khz=self.cpu_max_khz,
            thermal_zones=self.thermal_zones,
            hal_temperatures=self.hal_temperatures,
            thermal_status=0 if self.thermal_hal else None,
            shell_v2="shell_v2" in self.features,
        )
        settings.update(overrides)
        return ProfilePhone(serial, profile=self, **settings)


class ProfilePhone(FakePhone):
    """A `FakePhone` whose tools and services answer like its profile's generation.

    Args:
        serial: The phone's serial.
        profile: Its `PhoneProfile`.
        **kwargs: Passed to `FakePhone`.
    """

    def __init__(self, serial: str, *, profile: PhoneProfile, **kwargs: Any):
        super().__init__(serial, **kwargs)
        self.profile = profile
        # The device side reads these (see `RealAdbServer.add_phone`).
        self.adb_features = profile.features
        self.adb_transport_version = profile.transport_version
        self.adb_max_payload = profile.max_payload
        brand = profile.manufacturer.lower() if profile.manufacturer != "LGE" else "google"
        self.props.update({
            "ro.product.name": profile.codename,
            "ro.product.device": profile.codename,
            "ro.build.fingerprint": f"{brand}/{profile.codename}/{profile.codename}:{profile.release}/"
            f"{profile.build_id}:user/release-keys",
        })
        cpus = len(self.cpu_max_khz)
        for first, end in itertools.pairwise([*profile.clusters, cpus]):
            policy = f"/sys/devices/system/cpu/cpufreq/policy{first}"
            related = " ".join(str(cpu) for cpu in range(first, end))
            self.put_file(f"{policy}/related_cpus", f"{related}\n".encode())
            self.put_file(f"{policy}/affected_cpus", f"{related}\n".encode())
            self.put_file(f"{policy}/cpuinfo_max_freq", f"{self.cpu_max_khz[first]}\n".encode())

    def _cmd_sha256sum(self, args):
        if not self.profile.toybox:
            return _Outcome(stderr=b"/system/bin/sh: sha256sum: not found\n", exit_code=127)
        return super()._cmd_sha256sum(args)

    def _cmd_df(self, args):
        if self.profile.toybox:
            return super()._cmd_df(args)
        # Android 6's toolbox df: sizes with a unit letter, no percentage, no mount-point column.
        used = self._used_bytes()
        text = (
            "Filesystem               Size     Used     Free   Blksize\n"
            f"/data               {_human(used + self.free_bytes):>8} {_human(used):>8} "
            f"{_human(self.free_bytes):>8}   4096\n"
        )
        return _Outcome(stdout=text.encode())

    def _cmd_dumpsys(self, args):
        if args[:1] != ["thermalservice"] or self.profile.thermal_hal is None:
            return super()._cmd_dumpsys(args)
        status = self._next_thermal_status()
        temps = "".join(
            f"\tTemperature{{mValue={value}, mType={kind}, mName={name}, mStatus={status}}}\n"
            for name, kind, value in self.hal_temperatures
        )
        # The AIDL generation prints its HAL's name with two spaces before "connected".
        aidl_gap = " " if self.profile.thermal_hal.startswith("AIDL") else ""
        listeners = "\tcallbacks: 1\n\tkilled: false\n\tbroadcasts count: -1\n"
        text = (
            f"IsStatusOverride: false\nThermalEventListeners:\n{listeners}"
            f"ThermalStatusListeners:\n{listeners}"
            f"Thermal Status: {status}\nCached temperatures:\n{temps}HAL Ready: true\nHAL connection:\n"
            f"\tThermalHAL {self.profile.thermal_hal}{aidl_gap} connected: yes\n"
            f"Current temperatures from HAL:\n{temps}Current cooling devices from HAL:\n"
            "\tCoolingDevice{mValue=0, mType=2, mName=battery}\n"
        )
        return _Outcome(stdout=text.encode())


def _human(size: int) -> str:
    # toolbox df: one decimal and a unit letter (K, M, G), like "25.0G".
    value = float(size)
    for unit in "KMGT":
        value /= 1024.0
        if value < 1024.0 or unit == "T":
            return f"{value:.1f}{unit}"
    return f"{value:.1f}T"


_PIXEL_CLUSTERS_TEMPS = (("CPU0", 0, 36.5), ("CPU7", 0, 39.2), ("battery", 2, 29.8), ("skin", 3, 31.0))

#: The phones of each tested generation, by name.
PROFILES: dict[str, PhoneProfile] = {
    "android6": PhoneProfile(
        name="android6",
        codename="bullhead",
        build_id="MTC20K/3188520",
        release="6.0.1",
        sdk=23,
        model="Nexus 5X",
        manufacturer="LGE",
        board="msm8992",
        soc_model=None,
        soc_manufacturer=None,
        cpu_max_khz=(1440000,) * 4 + (1824000,) * 2,
        clusters=(),
        features=(),
        transport_version=A_VERSION_MIN,
        max_payload=256 * 1024,
        thermal_hal=None,
        toybox=False,
        thermal_zones=(("tsens_tz_sensor0", 36), ("tsens_tz_sensor1", 38), ("tsens_tz_sensor5", 41)),
    ),
    "android10": PhoneProfile(
        name="android10",
        codename="flame",
        build_id="QQ3A.200805.001/6578210",
        release="10",
        sdk=29,
        model="Pixel 4",
        manufacturer="Google",
        board="msmnile",
        soc_model=None,
        soc_manufacturer=None,
        cpu_max_khz=(1785600,) * 4 + (2419200,) * 3 + (2841600,),
        clusters=(0, 4, 7),
        features=ANDROID_10_FEATURES,
        transport_version=A_VERSION,
        max_payload=MAX_PAYLOAD,
        thermal_hal="2.0",
        toybox=True,
        thermal_zones=(("cpu-0-0-usr", 36500), ("cpu-1-0-usr", 38100), ("battery", 29800)),
        hal_temperatures=(("cpu0-silver-usr", 0, 36.5), ("cpu1-gold-usr", 0, 38.1), ("battery", 2, 29.8)),
    ),
    "android14": PhoneProfile(
        name="android14",
        codename="panther",
        build_id="UQ1A.240105.004/11206848",
        release="14",
        sdk=34,
        model="Pixel 7",
        manufacturer="Google",
        board="gs201",
        soc_model="GS201",
        soc_manufacturer="Google",
        cpu_max_khz=(1803000,) * 4 + (2348000,) * 2 + (2850000,) * 2,
        clusters=(0, 4, 6),
        features=(*ANDROID_10_FEATURES, "ls_v2"),
        transport_version=A_VERSION,
        max_payload=MAX_PAYLOAD,
        thermal_hal="AIDL 1",
        toybox=True,
        thermal_zones=(
            ("cpu-0-0-usr", 36500), ("cpu-1-0-usr", 37800), ("cpu-2-0-usr", 39200), ("battery", 29800),
        ),
        hal_temperatures=_PIXEL_CLUSTERS_TEMPS,
    ),
}
