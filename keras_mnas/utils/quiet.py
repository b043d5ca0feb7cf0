"""A quiet TensorFlow start-up for the `keras-mnas` command and the examples.

TensorFlow 2.18 and later print their start-up lines through absl before its logging is initialised, which
`TF_CPP_MIN_LOG_LEVEL` does not silence: the oneDNN notice, "Could not find cuda drivers", the absl
"All log messages before absl::InitializeLog()" banner and, on a machine without a GPU, `E0000 ...
failed call to cuInit`. They say nothing a user of a CPU search needs, and they look like errors.

`quiet_tensorflow_startup` imports TensorFlow and initialises its devices with the process's standard error
captured, then writes back every captured line except those start-up lines. A user who set
`TF_CPP_MIN_LOG_LEVEL` has chosen their own level: then nothing is hidden.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator

__all__ = ["STARTUP_LINE", "quiet_tensorflow_startup"]

#: The lines hidden: absl's pre-initialisation banner, and the absl/glog lines of the C++ files that report
#: the CPU build (oneDNN, CPU features) and a missing GPU (CUDA, cuDNN, cuFFT, cuBLAS, TensorRT).
STARTUP_LINE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IWEF]\d{4} [\d:. ]+\d+ (port|cudart_stub|cuda_platform|cuda_diagnostics|cpu_feature_guard|cuda_fft"
    r"|cuda_dnn|cuda_blas|cuda_executor|gpu_device|computation_placer|py_utils)\.cc:\d+\] )"
)


@contextlib.contextmanager
def _stderr_filtered(pattern: re.Pattern) -> Iterator[None]:
    """Captures file descriptor 2 (C++ code writes there directly) and replays the lines not matching."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", errors="replace")
            kept = [line for line in text.splitlines(keepends=True) if not pattern.match(line)]
            if kept:
                # Anything else printed meanwhile (a real error while importing) still reaches the user.
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def quiet_tensorflow_startup() -> bool:
    """Imports TensorFlow without its start-up lines, unless the user set `TF_CPP_MIN_LOG_LEVEL`.

    Call it before anything imports TensorFlow (Keras, KerasTuner, `keras_mnas.latency`, ...). It also
    sets `TF_CPP_MIN_LOG_LEVEL=2`, so TensorFlow's later informational lines stay hidden too; warnings
    and errors of the run itself are still printed.

    Returns:
        True when it hid the start-up; False when it left TensorFlow alone: the user set
        `TF_CPP_MIN_LOG_LEVEL`, or TensorFlow was already imported (its lines are printed by then).

    Example:

    ```python
    from keras_mnas.utils.quiet import quiet_tensorflow_startup

    quiet_tensorflow_startup()
    import keras  # no oneDNN, CUDA or cuInit lines
    ```
    """
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ or "tensorflow" in sys.modules:
        return False
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    with _stderr_filtered(STARTUP_LINE):
        import tensorflow as tf

        # Devices are initialised on first use; cuInit fails (and says so) there, so do it now.
        tf.config.list_physical_devices()
    return True
