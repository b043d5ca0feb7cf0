"""The quiet TensorFlow start-up: which lines it hides, and that it leaves a user's own log level alone."""

import os
import pathlib
import subprocess
import sys

from keras_mnas.utils.quiet import STARTUP_LINE, _stderr_filtered

REPOSITORY = pathlib.Path(__file__).resolve().parents[2]

# What TensorFlow 2.21 printed at start-up on a CPU-only machine, before it was hidden.
STARTUP = """\
WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1796594077.561202    4501 port.cc:153] oneDNN custom operations are on. You may see slightly \
different numerical results due to floating-point round-off errors from different computation orders.
I0000 00:00:1796594077.561492    4501 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU \
will not be used.
E0000 00:00:1796594080.778803    4501 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: \
Failed call to cuInit: UNKNOWN ERROR (303)
I0000 00:00:1796594080.778803    4501 cpu_feature_guard.cc:210] This TensorFlow binary is optimized to use \
available CPU instructions in performance-critical operations.
"""


def test_the_start_up_lines_are_hidden_and_every_other_line_is_kept(capfd):
    other = "E0000 00:00:1796594080.778803    4501 graph.cc:12] a real error\nTraceback: something else\n"
    with _stderr_filtered(STARTUP_LINE):
        os.write(2, (STARTUP + other).encode())  # C++ code writes to the descriptor, not to sys.stderr
    assert capfd.readouterr().err == other


def test_a_log_level_the_user_set_is_left_alone():
    code = (
        "import sys\n"
        "from keras_mnas.utils.quiet import quiet_tensorflow_startup\n"
        "print(quiet_tensorflow_startup(), 'tensorflow' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPOSITORY), "TF_CPP_MIN_LOG_LEVEL": "0"}
    process = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120, check=True
    )
    assert process.stdout.split() == ["False", "False"]  # nothing hidden, nothing imported
