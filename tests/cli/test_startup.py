"""`keras-mnas --help` and `keras-mnas results DIR` start without TensorFlow, Keras or KerasTuner.

Each command runs in a fresh interpreter, as the entry point runs it; the test checks what it imported, not
how long it took (benchmarks/cli_startup.py measures that).
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from keras_mnas.search import MnasSearchSpace

HEAVY = ("tensorflow", "keras", "keras_tuner", "matplotlib")
REPOSITORY = pathlib.Path(__file__).resolve().parents[2]
ENTRY = (
    "import json, sys\n"
    "from keras_mnas.cli import main\n"
    "status = main(sys.argv[1:])\n"
    f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]), file=sys.stderr)\n"
    "sys.exit(status)\n"
)


def run_fresh(*argv):
    """Runs the command in a new interpreter; returns (status, stdout, heavy modules it imported)."""
    process = subprocess.run(
        [sys.executable, "-c", ENTRY, *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPOSITORY,  # this checkout's keras_mnas
        env={**os.environ, "PYTHONPATH": str(REPOSITORY)},
    )
    return process.returncode, process.stdout, json.loads(process.stderr.strip().splitlines()[-1])


@pytest.fixture
def project(tmp_path):
    space = MnasSearchSpace(
        [(1, 16, 1, 1), (6, 24, 1, 2)],
        input_shape=(16, 16, 1),
        classes=10,
        fixed_blocks={0: "r1_k3_s11_e1_i32_o16_noskip"},
    )
    path = tmp_path / "tiny"
    for trial_id, values in enumerate(space.sample_values(2, seed=0)):
        metrics = {
            name: {"direction": direction, "observations": [{"value": [value], "step": 0}]}
            for name, direction, value in (
                ("val_accuracy", "max", 0.5 + trial_id / 10),
                ("latency_ms", "min", 2.0),
            )
        }
        (path / f"trial_{trial_id}").mkdir(parents=True)
        (path / f"trial_{trial_id}" / "trial.json").write_text(
            json.dumps(
                {
                    "trial_id": str(trial_id),
                    "hyperparameters": {"space": [], "values": values},
                    "metrics": {"metrics": metrics},
                    "score": 0.5,
                    "status": "COMPLETED",
                }
            )
        )
    config = {
        "space": space.get_config(),
        "reward": {"target_latency_ms": 2.0, "alpha": -0.07, "beta": -0.07, "metric": "val_accuracy"},
        "latency": {"name": "host"},
        "quantization": "float32",
    }
    (path / "oracle.json").write_text(
        json.dumps({"start_order": ["0", "1"], "mnas": {"search_config": config}})
    )
    return path


def test_help_imports_no_tensorflow_keras_or_keras_tuner():
    status, out, heavy = run_fresh("--help")
    assert status == 0 and "results" in out
    assert heavy == []


def test_results_imports_no_tensorflow_keras_or_keras_tuner(project):
    status, out, heavy = run_fresh("results", project)
    assert status == 0
    assert "2 trials (2 completed)" in out and "Pareto front" in out
    assert heavy == []
    status, out, heavy = run_fresh("results", project, "--json")
    assert status == 0 and len(json.loads(out)["trials"]) == 2
    assert heavy == []
