"""`keras-mnas devices`: the Android phones an adb server knows, with their health."""

from __future__ import annotations

import argparse

from keras_mnas.cli import _format as fmt
from keras_mnas.cli._common import EXIT_OK, CliError

# What an error about a missing server or phone points at: every pip install has this help text.
REMOTE_SERVERS = """\
A phone is listed once it is plugged in with USB debugging on (Settings > About phone: tap "Build number"
seven times; then Developer options > USB debugging) and its "Allow USB debugging?" prompt is accepted.

The adb server runs on the machine the phones are plugged into (`adb start-server`) and listens on
127.0.0.1:5037. To reach it from another machine, forward a port over SSH and give that port:

  ssh -N -L 15037:127.0.0.1:5037 user@lab-host
  keras-mnas devices --adb-port 15037

On a network you fully trust, and only there, the server can listen on every interface instead
(`adb kill-server && adb -a nodaemon server start` on that machine): then --adb-host lab-host. Anyone who
reaches that port can install apps on the phones and run commands on them.
"""


def register(commands: argparse._SubParsersAction) -> None:
    """Adds the `devices` command and its options to the `keras-mnas` parser's subcommands."""
    devices = commands.add_parser(
        "devices",
        help="list the Android phones of an adb server",
        description="List the phones an adb server "
        "knows: model, SoC, SDK, ABI, big cores, temperature and health.",
        epilog=REMOTE_SERVERS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    devices.add_argument("--adb-host", help="host of the adb server (127.0.0.1)")
    devices.add_argument("--adb-port", type=int, help="port of the adb server (5037)")
    devices.add_argument(
        "--timeout", type=float, default=10.0, help="deadline of each adb call, seconds (10)"
    )
    devices.add_argument("--json", action="store_true", help="print JSON")
    devices.set_defaults(handler=run)



def run(args: argparse.Namespace) -> int:
    """Lists the phones; exit status 1 when there is none."""
    from keras_mnas.latency.android import DEFAULT_ADB_HOST, DEFAULT_ADB_PORT, list_devices

    host = args.adb_host or DEFAULT_ADB_HOST
    port = args.adb_port or DEFAULT_ADB_PORT
    infos = list_devices(host, port, timeout_s=args.timeout)
    if args.json:
        fmt.print_json([info.to_dict() for info in infos])
    if not infos:
        raise CliError(
            f"No phone on adb server {host}:{port}. Plug one in with USB debugging on and accept the "
            "'Allow USB debugging?' prompt (see `keras-mnas devices --help`)."
        )
    if args.json:
        return EXIT_OK
    rows = []
    for info in infos:
        thermal = info.thermal
        temperature = None
        if thermal is not None:
            parts = []
            if thermal.cpu_max_c is not None:
                parts.append(f"{thermal.cpu_max_c:.1f} C")
            if thermal.status is not None:
                parts.append(f"status {thermal.status}")
            temperature = ", ".join(parts) or None
        reason = (info.error or "").removeprefix("too hot: ")
        health = f"{info.health}: {reason}" if reason else info.health
        rows.append(
            [
                info.serial,
                info.model or None,
                info.soc or None,
                info.sdk,
                info.abi or None,
                ",".join(str(c) for c in info.big_cores) or None,
                temperature,
                health,
            ]
        )
    print(fmt.table(rows, ["SERIAL", "MODEL", "SOC", "SDK", "ABI", "BIG CORES", "TEMPERATURE", "HEALTH"]))
    return EXIT_OK

