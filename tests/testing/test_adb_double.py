"""The loopback adb double, exercised through the real adbutils client."""

import shlex
import threading
import time

import adbutils
import pytest

from keras_mnas.latency.benchmark_model import parse_benchmark_output
from keras_mnas.latency.errors import BenchmarkError, ModelError
from keras_mnas.testing import AdbDouble, FakeBenchmark, FakePhone, Fault, fake_benchmark_output

# adbutils must never start a real adb server on the test machine.
pytestmark = pytest.mark.usefixtures("no_real_adb")

TMP = "/data/local/tmp"
BINARY = f"{TMP}/benchmark_model"
GRAPH = f"{TMP}/model.tflite"


@pytest.fixture
def server():
    with AdbDouble([FakePhone("PHONE1", benchmark=FakeBenchmark(latency_ms=12.0))]) as double:
        yield double


def client_for(double):
    return adbutils.AdbClient(host="127.0.0.1", port=double.port, socket_timeout=5)


def install(device, latency_binary=b"\x7fELF fake", graph=b"TFL3 model"):
    device.sync.push(latency_binary, BINARY, 0o755)
    device.sync.push(graph, GRAPH, 0o644)


def test_listens_on_loopback_on_a_free_port(server):
    assert server.host == "127.0.0.1"
    assert server.port > 0
    other = AdbDouble()
    try:
        assert other.port != server.port
    finally:
        other.stop()


def test_version_and_device_lists():
    phones = [FakePhone("A"), FakePhone("B", state="offline"), FakePhone("C", state="unauthorized")]
    with AdbDouble(phones) as double:
        client = client_for(double)
        assert client.server_version() == 41
        assert [(d.serial, d.state) for d in client.list()] == [
            ("A", "device"),
            ("B", "offline"),
            ("C", "unauthorized"),
        ]
        extended = client.list(extended=True)
        assert extended[0].tags["model"] == "Pixel_7"
        assert extended[0].transport_id == 1
        # adbutils' device_list keeps only usable phones.
        assert [d.serial for d in client.device_list()] == ["A"]


def test_offline_unauthorized_and_missing_phones_fail_like_adb():
    phones = [FakePhone("B", state="offline"), FakePhone("C", state="unauthorized")]
    with AdbDouble(phones) as double:
        client = client_for(double)
        with pytest.raises(adbutils.AdbError, match="device offline"):
            client.device("B").shell("echo hi")
        with pytest.raises(adbutils.AdbError, match="device unauthorized"):
            client.device("C").shell("echo hi")
        with pytest.raises(adbutils.AdbError, match="device 'NOPE' not found"):
            client.device("NOPE").shell("echo hi")


def test_transport_forms(server):
    client = client_for(server)
    assert client.device("PHONE1").shell("echo hi") == "hi"
    assert "host:tport:serial:PHONE1" in server.requests
    assert client.device(transport_id=1).shell("echo by-id") == "by-id"
    assert "host:transport-id:1" in server.requests
    assert client.device("PHONE1").get_state() == "device"


def test_old_servers_use_host_transport():
    with AdbDouble([FakePhone("OLD")], server_version=40) as double:
        assert client_for(double).device("OLD").shell("echo old") == "old"
        assert "host:transport:OLD" in double.requests
        assert not any(r.startswith("host:tport:") for r in double.requests)


def test_shell_v1_and_v2_exit_codes_and_streams():
    with AdbDouble([FakePhone("V2"), FakePhone("V1", shell_v2=False)]) as double:
        client = client_for(double)
        v2 = client.device("V2").shell2("cat /nope; echo after", v2=True)
        assert v2.returncode == 0
        assert v2.stdout == "after\n"
        assert "No such file" in v2.stderr
        failed = client.device("V2").shell2("cat /nope", v2=True)
        assert failed.returncode == 1
        assert "shell_v2" in client.device("V2").get_features()
        assert "shell_v2" not in client.device("V1").get_features()
        # Without shell_v2, adbutils appends `; echo X4EXIT:$?` and reads the status back.
        v1 = client.device("V1").shell2("cat /nope")
        assert v1.returncode == 1
        assert "No such file" in v1.output
        assert any("X4EXIT" in c for c in double.phone("V1").commands)


def test_getprop_one_and_all(server):
    device = client_for(server).device("PHONE1")
    assert device.prop.model == "Pixel 7"
    assert device.shell(["getprop", "ro.product.cpu.abi"]) == "arm64-v8a"
    listing = device.shell("getprop")
    assert "[ro.build.version.sdk]: [34]" in listing
    assert "[ro.soc.model]: [GS201]" in listing


def test_sync_push_stat_list_read_roundtrip(server):
    device = client_for(server).device("PHONE1")
    data = bytes(range(256)) * 1000  # 256 kB: several DATA chunks
    assert device.sync.push(data, f"{TMP}/blob.bin", 0o600) == len(data)
    info = device.sync.stat(f"{TMP}/blob.bin")
    assert info.size == len(data)
    assert info.mode & 0o777 == 0o600
    assert device.sync.read_bytes(f"{TMP}/blob.bin") == data
    assert "blob.bin" in [f.path for f in device.sync.list(TMP)]
    assert server.phone("PHONE1").file(f"{TMP}/blob.bin") == data
    missing = device.sync.stat(f"{TMP}/missing")
    assert (missing.mode, missing.size, missing.mtime) == (0, 0, None)
    with pytest.raises(adbutils.AdbError, match="No such file"):
        device.sync.read_bytes(f"{TMP}/missing")


def test_full_disk_fails_the_push_and_keeps_nothing():
    phone = FakePhone("FULL", free_bytes=1000)
    with AdbDouble([phone]) as double:
        device = client_for(double).device("FULL")
        with pytest.raises(adbutils.AdbError):
            device.sync.push(b"x" * 5000, f"{TMP}/big.bin")
        assert phone.file(f"{TMP}/big.bin") is None
        # df reports the 1000 free bytes as 0 kB available.
        assert device.shell(["df", TMP]).splitlines()[1].split()[3] == "0"


def test_cpufreq_and_thermal_zone_files(server):
    device = client_for(server).device("PHONE1")
    assert device.shell("cat /sys/devices/system/cpu/possible") == "0-7"
    files = [f"/sys/devices/system/cpu/cpu{i}/cpufreq/cpuinfo_max_freq" for i in (0, 7, 9)]
    out = device.shell2(["grep", "-sH", ".", *files], v2=True)
    assert out.stdout.splitlines() == [f"{files[0]}:1803000", f"{files[1]}:2850000"]
    assert "thermal_zone0" in device.shell(["ls", "/sys/class/thermal"]).split()
    assert device.shell("cat /sys/class/thermal/thermal_zone2/temp") == "39200"


def test_dumpsys_thermalservice_cools_down_and_may_be_missing():
    with AdbDouble(
        [FakePhone("HOT", thermal_status=[3, 1, 0]), FakePhone("OLD", thermal_status=None)]
    ) as double:
        device = client_for(double).device("HOT")
        statuses = [
            line
            for _ in range(4)
            for line in device.shell("dumpsys thermalservice").splitlines()
            if "Status:" in line
        ]
        assert [s for s in statuses if s.startswith("Thermal Status")] == [
            "Thermal Status: 3",
            "Thermal Status: 1",
            "Thermal Status: 0",
            "Thermal Status: 0",
        ]
        assert "mName=CPU7" in device.shell("dumpsys thermalservice")
        assert "Can't find service" in client_for(double).device("OLD").shell("dumpsys thermalservice")


@pytest.mark.parametrize("generation", ["tf1", "tf1.13", "tf2", "litert"])
def test_fake_benchmark_prints_parseable_output_of_each_generation(generation):
    phone = FakePhone("P", benchmark=FakeBenchmark(generation=generation, latency_ms=20.0, relative_std=0.02))
    with AdbDouble([phone]) as double:
        device = client_for(double).device("P")
        install(device)
        command = shlex.join(
            ["taskset", "80", BINARY, f"--graph={GRAPH}", "--num_runs=40", "--min_secs=0", "--warmup_runs=3"]
        )
        result = device.shell2(command, v2=True)
        # Without --min_secs the real tool runs for at least a second: 50 runs of 20 ms, not 40.
        default = device.shell2(shlex.join([BINARY, f"--graph={GRAPH}", "--num_runs=40"]), v2=True)
    assert parse_benchmark_output(default.stdout, exit_code=default.returncode).runs.count == 50
    assert result.returncode == 0
    parsed = parse_benchmark_output(result.stdout, exit_code=result.returncode)
    assert parsed.generation == generation
    assert parsed.runs.count == 40
    assert parsed.warmup.count == 3
    assert parsed.figure_ms == pytest.approx(20.0, rel=0.05)
    run = phone.benchmark_runs[0]
    assert run.core_mask == "80"
    assert run.flags["num_runs"] == "40"


def test_fake_benchmark_output_function_matches_the_parser():
    text = fake_benchmark_output(
        "litert", graph=GRAPH, warmup_us=[1500], runs_us=[1000, 1200, 1100], init_us=900
    )
    parsed = parse_benchmark_output(text)
    assert parsed.runs.median_us == 1100
    assert parsed.inference_avg_us == pytest.approx(1100)
    assert parsed.warmup.count == 1


def test_latency_may_depend_on_the_model_and_flags(server):
    phone = server.phone("PHONE1")
    phone.benchmark = FakeBenchmark(latency_ms=lambda run: 10.0 * int(run.flags["num_threads"]))
    device = client_for(server).device("PHONE1")
    install(device)
    out = device.shell2(shlex.join([BINARY, f"--graph={GRAPH}", "--num_threads=3", "--num_runs=5"]), v2=True)
    assert parse_benchmark_output(out.stdout).figure_ms == pytest.approx(30.0, rel=0.05)
    assert phone.benchmark_runs[-1].core_mask is None


def test_shell_splits_like_sh_so_unquoted_arguments_break(server):
    device = client_for(server).device("PHONE1")
    spaced = f"{TMP}/my model.tflite"
    device.sync.push(b"\x7fELF", BINARY, 0o755)
    device.sync.push(b"TFL3", spaced)
    quoted = device.shell2(shlex.join([BINARY, f"--graph={spaced}", "--num_runs=2"]), v2=True)
    assert quoted.returncode == 0
    unquoted = device.shell2(f"{BINARY} --graph={spaced} --num_runs=2", v2=True)
    assert unquoted.returncode == 1
    assert "Could not open" in unquoted.stdout


def test_taskset_refuses_a_mask_outside_the_cpuset():
    phone = FakePhone("P", allowed_cpus=range(4))
    with AdbDouble([phone]) as double:
        device = client_for(double).device("P")
        install(device)
        refused = device.shell2(shlex.join(["taskset", "80", BINARY, f"--graph={GRAPH}"]), v2=True)
        assert refused.returncode == 1
        assert "sched_setaffinity: Invalid argument" in refused.stderr
        assert (
            device.shell2(shlex.join(["taskset", "1", BINARY, f"--graph={GRAPH}"]), v2=True).returncode == 0
        )


def test_missing_graph_and_non_executable_binary(server):
    device = client_for(server).device("PHONE1")
    device.sync.push(b"\x7fELF", BINARY, 0o644)
    no_exec = device.shell2(shlex.join([BINARY, f"--graph={GRAPH}"]), v2=True)
    assert no_exec.returncode == 126
    device.shell(["chmod", "755", BINARY])
    no_graph = device.shell2(shlex.join([BINARY, f"--graph={GRAPH}"]), v2=True)
    assert no_graph.returncode == 1
    with pytest.raises(BenchmarkError, match="Failed to mmap"):
        parse_benchmark_output(no_graph.stdout, exit_code=no_graph.returncode)
    assert device.shell2("no_such_tool", v2=True).returncode == 127


@pytest.mark.parametrize("kind", ["op-version", "delegate", "xnnpack-reshape"])
def test_fake_model_errors_are_model_errors(kind):
    phone = FakePhone("P", benchmark=FakeBenchmark(model_error=kind))
    with AdbDouble([phone]) as double:
        device = client_for(double).device("P")
        install(device)
        out = device.shell2(shlex.join([BINARY, f"--graph={GRAPH}"]), v2=True)
    with pytest.raises(ModelError):
        parse_benchmark_output(out.stdout, exit_code=out.returncode)


def test_lease_primitives_ln_readlink_mv_rm_date(server):
    device = client_for(server).device("PHONE1")
    link = f"{TMP}/lock"
    assert device.shell2(["ln", "-s", "owner-a", link], v2=True).returncode == 0
    taken = device.shell2(["ln", "-s", "owner-b", link], v2=True)
    assert taken.returncode == 1 and "File exists" in taken.stderr
    assert device.shell(["readlink", link]) == "owner-a"
    device.shell2(["ln", "-s", "owner-c", f"{TMP}/tmp-link"], v2=True)
    assert device.shell2(["mv", "-f", f"{TMP}/tmp-link", link], v2=True).returncode == 0
    assert server.phone("PHONE1").symlink_target(link) == "owner-c"
    assert device.shell2(["rm", "-f", link], v2=True).returncode == 0
    assert device.shell2(["readlink", link], v2=True).returncode == 1
    assert abs(int(device.shell(["date", "+%s"])) - time.time()) < 5


def test_pidof_sees_a_running_benchmark(server):
    phone = server.phone("PHONE1")
    phone.benchmark = FakeBenchmark(duration_s=0.5)
    device = client_for(server).device("PHONE1")
    install(device)
    thread = threading.Thread(target=device.shell, args=(shlex.join([BINARY, f"--graph={GRAPH}"]),))
    thread.start()
    time.sleep(0.2)
    assert device.shell2(["pidof", "benchmark_model"], v2=True).returncode == 0
    thread.join()
    assert device.shell2(["pidof", "benchmark_model"], v2=True).returncode == 1
    assert phone.max_concurrent_benchmarks == 1


# --------------------------------------------------------------------------------------------------
# Faults.


def test_drop_mid_shell_v2_raises_but_v1_returns_truncated_output(server):
    phone = server.phone("PHONE1")
    device = client_for(server).device("PHONE1")
    install(device)
    command = shlex.join([BINARY, f"--graph={GRAPH}"])
    phone.add_fault(Fault("benchmark_model", "drop"))
    with pytest.raises(EOFError):
        device.shell2(command, v2=True)
    # The pitfall REFERENCE.md warns about: shell() hands back the cut output with no error at all.
    phone.add_fault(Fault("benchmark_model", "drop"))
    cut = device.shell(command)
    assert cut and "Inference timings" not in cut
    with pytest.raises(BenchmarkError):
        parse_benchmark_output(cut)


def test_hang_is_bounded_only_by_the_silence_timeout(server):
    phone = server.phone("PHONE1")
    phone.add_fault(Fault("sleepy", "hang"))
    device = client_for(server).device("PHONE1")
    start = time.monotonic()
    with pytest.raises(adbutils.AdbTimeout):
        device.shell("sleepy", timeout=0.3)
    assert time.monotonic() - start < 2


def test_trickle_defeats_the_silence_timeout(server):
    phone = server.phone("PHONE1")
    phone.add_fault(Fault("slowpoke", "trickle", interval_s=0.05))
    device = client_for(server).device("PHONE1")
    outcome = {}

    def call():
        try:
            outcome["value"] = device.shell("slowpoke", timeout=0.3)
        except Exception as e:
            outcome["error"] = e

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(1.0)
    # A 0.3 s timeout, yet the call is still running after 1 s: adbutils' timeout is not a deadline.
    assert thread.is_alive()
    server.stop()
    thread.join(5)
    assert not thread.is_alive()


@pytest.mark.parametrize("code", [1, 134])
def test_exit_status_faults(server, code):
    phone = server.phone("PHONE1")
    device = client_for(server).device("PHONE1")
    install(device)
    phone.add_fault(Fault("benchmark_model", "exit", exit_code=code))
    out = device.shell2(shlex.join([BINARY, f"--graph={GRAPH}"]), v2=True)
    assert out.returncode == code
    with pytest.raises(BenchmarkError):
        parse_benchmark_output(out.stdout, exit_code=out.returncode)
    # The fault was used up: the next run is fine.
    assert device.shell2(shlex.join([BINARY, f"--graph={GRAPH}"]), v2=True).returncode == 0


def test_truncated_output_with_status_zero(server):
    phone = server.phone("PHONE1")
    device = client_for(server).device("PHONE1")
    install(device)
    phone.add_fault(Fault("benchmark_model", "truncate", keep_fraction=0.6))
    out = device.shell2(shlex.join([BINARY, f"--graph={GRAPH}"]), v2=True)
    assert out.returncode == 0
    with pytest.raises(BenchmarkError):
        parse_benchmark_output(out.stdout, exit_code=0)


@pytest.mark.parametrize(
    "action, message",
    [("offline", "device offline"), ("unauthorized", "unauthorized"), ("disappear", "not found")],
)
def test_state_changes_mid_command(server, action, message):
    phone = server.phone("PHONE1")
    client = client_for(server)
    install(client.device("PHONE1"))
    phone.add_fault(Fault("benchmark_model", action))
    with pytest.raises(EOFError):
        client.device("PHONE1").shell2(shlex.join([BINARY, f"--graph={GRAPH}"]), v2=True)
    with pytest.raises(adbutils.AdbError, match=message):
        client.device("PHONE1").shell("echo hi")
    listed = {d.serial: d.state for d in client.list()}
    assert listed.get("PHONE1") == (None if action == "disappear" else action)


def test_fault_times_and_matching(server):
    phone = server.phone("PHONE1")
    device = client_for(server).device("PHONE1")
    phone.add_fault(Fault("echo boom", "exit", exit_code=3, output="boom\n", times=2))
    assert device.shell2("echo fine", v2=True).returncode == 0
    assert device.shell2("echo boom", v2=True).returncode == 3
    assert device.shell2("echo boom", v2=True).returncode == 3
    assert device.shell2("echo boom", v2=True).returncode == 0


def test_delay_fault_then_normal_answer(server):
    server.phone("PHONE1").add_fault(Fault("echo late", "delay", delay_s=0.3))
    start = time.monotonic()
    assert client_for(server).device("PHONE1").shell("echo late") == "late"
    assert time.monotonic() - start >= 0.3


def test_invalid_fault_is_refused():
    with pytest.raises(ValueError, match=r"Fault\.action"):
        Fault("x", "explode")


def test_stop_ends_hung_connections_quickly(server):
    server.phone("PHONE1").add_fault(Fault("forever", "hang"))
    device = client_for(server).device("PHONE1")
    outcome = []
    thread = threading.Thread(target=lambda: outcome.append(device.shell("forever")), daemon=True)
    thread.start()
    time.sleep(0.2)
    start = time.monotonic()
    server.stop()
    thread.join(5)
    assert time.monotonic() - start < 3
    assert not thread.is_alive()
    # The server went away mid-command: shell() v1 returns what it got (nothing), with no error.
    assert outcome == [""]


def test_no_server_means_a_connection_error_not_a_real_adb(monkeypatch):
    double = AdbDouble()
    port = double.port
    double.stop()  # nothing listens on the port any more
    with pytest.raises(adbutils.AdbError):
        adbutils.AdbClient(port=port).server_version()


def test_ln_fails_like_toybox_where_a_phone_refuses_links():
    phones = [FakePhone("P"), FakePhone("FULL", free_bytes=0)]
    with AdbDouble(phones) as double:
        client = client_for(double)
        device = client.device("P")
        for path, reason in [
            (f"{TMP}/missing/lock", "No such file or directory"),
            ("/sdcard/lock", "Operation not permitted"),
        ]:
            refused = device.shell2(["ln", "-s", "owner", path], v2=True)
            assert refused.returncode == 1
            assert refused.stderr == f"ln: cannot create symbolic link from 'owner' to '{path}': {reason}\n"
        full = client.device("FULL").shell2(["ln", "-s", "owner", f"{TMP}/lock"], v2=True)
        assert "No space left on device" in full.stderr
        assert double.phone("FULL").symlink_target(f"{TMP}/lock") is None


def test_shell_v1_of_android_6_comes_through_a_pty():
    phones = [FakePhone("M", sdk=23, shell_v2=False), FakePhone("Q", sdk=29, shell_v2=False)]
    with AdbDouble(phones) as double:
        client = client_for(double)
        old = client.device("M").shell2("echo a; echo b")
        assert (old.output, old.stdout, old.returncode) == ("a\r\nb\r\n", "", 0)  # adbutils fills no stdout
        assert client.device("Q").shell2("echo a; echo b").output == "a\nb\n"


def test_fake_output_prints_statistics_without_an_average_like_tensorflow():
    one = fake_benchmark_output("litert", graph=GRAPH, warmup_us=[900], runs_us=[800], init_us=100)
    assert "INFO: count=1 curr=800 p5=800 median=800 p95=800\n" in one
    same = fake_benchmark_output("tf2", graph=GRAPH, warmup_us=[900], runs_us=[800, 800], init_us=100)
    assert "count=2 curr=800(all same)\n" in same
    assert parse_benchmark_output(same).figure_ms == 0.8


def test_fake_benchmark_prints_an_op_profile_when_asked(server):
    device = client_for(server).device("PHONE1")
    install(device)
    profiled = [BINARY, f"--graph={GRAPH}", "--num_runs=3", "--enable_op_profiling=true"]
    text = device.shell(shlex.join(profiled))
    assert "Operator-wise Profiling Info for Regular Benchmark Runs:" in text
    profile = parse_benchmark_output(text).op_profile
    assert sum(profile.by_type.values()) == pytest.approx(12.0, rel=1e-3)
    plain = device.shell(shlex.join([BINARY, f"--graph={GRAPH}", "--num_runs=3"]))
    assert parse_benchmark_output(plain).op_profile is None
