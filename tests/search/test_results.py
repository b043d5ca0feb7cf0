"""How a search's results read: `results_summary`'s and `keras-mnas results`' text, and the Pareto plot."""

import io

import numpy as np
import pytest

from keras_mnas.search.results import _pareto_figure, format_results, pareto_front, plot_pareto
from keras_mnas.utils.text import distinct_numbers


def record(trial_id, accuracy, latency_ms, *, spread=0.01, status="COMPLETED", skipped=False, message=None):
    return {
        "trial_id": trial_id,
        "status": status,
        "accuracy": accuracy,
        "latency_ms": latency_ms,
        "latency_spread": spread,
        "reward": None if accuracy is None else accuracy * 0.99,
        "params": 97_200,
        "macs": 878_000,
        "skipped": skipped,
        "architecture": {"blocks": ["r1_k3_s11_e1_i32_o16", f"r2_k5_s22_e6_i16_o{24 + int(trial_id)}"]},
        "values": {},
        "message": message,
    }


def rows(text, header="TRIAL"):
    """`{trial id: row tokens}` of the first table of `text` whose header starts with `header`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    found = {}
    for line in lines[start + 1 :]:
        if not line[:1].isdigit():
            break
        found[line.split()[0]] = line.split()
    return found


def test_close_latencies_print_distinctly_and_alike_in_both_tables():
    # Two tens-of-microseconds candidates 0.01% apart: "0.023 ms" and even 4 significant digits merge them.
    records = [record("0", 0.91, 0.0231204), record("1", 0.88, 0.0231234), record("2", 0.95, 0.0402)]
    text = format_results(records, front=pareto_front(records))
    trials = rows(text)
    shown = {trial_id: row[3] for trial_id, row in trials.items()}
    assert len(set(shown.values())) == 3, shown
    assert float(shown["0"]) < float(shown["1"])
    assert shown == {"0": "0.02312", "1": "0.023123", "2": "0.0402"}
    # Each figure reads the same in the Pareto table.
    front = rows(text.split("Pareto front")[1])
    assert front and all(row[3] == shown[trial_id] for trial_id, row in front.items())


def test_distinct_numbers_keeps_the_fewest_digits_and_equal_values_equal():
    assert distinct_numbers([2.0, 1.0, 1000.0, None]) == ["2", "1", "1000", None]
    assert distinct_numbers([0.0231204, 0.0231267]) == ["0.02312", "0.02313"]
    assert distinct_numbers([0.02312041, 0.02312049]) == ["0.0231204", "0.0231205"]
    assert distinct_numbers([1.5, 1.5, float("nan")]) == ["1.5", "1.5", None]


def test_the_table_marks_unstable_skipped_and_failed_trials():
    records = [
        record("0", 0.9, 1.0, spread=0.08),
        record("1", None, 40.0, skipped=True),
        record("2", None, None, status="FAILED", message="Traceback...\nValueError: no memory"),
    ]
    text = format_results(records, metric="int8_val_accuracy", searched_blocks=[1])
    header = text.splitlines()[0].split()
    assert header[:4] == ["TRIAL", "STATUS", "INT8_VAL_ACCURACY", "LATENCY_MS"]
    assert text.splitlines()[0].endswith("SEARCHED BLOCKS")
    trials = rows(text)
    assert trials["0"][3:5] == ["1", "(!)"] and trials["0"][-1] == "r2_k5_s22_e6_i16_o24"  # searched only
    assert trials["1"][2] == "skipped" and "(!)" not in trials["1"]
    assert "(!) 1 latency was measured with a spread above 5%" in text
    assert "trial 2 failed: ValueError: no memory" in text
    assert "Pareto front" not in text  # no front given, none listed
    assert "no completed trial" in format_results(records[1:], front=[])


def test_pareto_plot_legend_hides_no_trial():
    # A trial in every corner of the axes, the lower right (slow and inaccurate) among them.
    records = [
        record("0", 0.10, 0.020),
        record("1", 0.10, 0.060),
        record("2", 0.95, 0.020),
        record("3", 0.95, 0.060),
        record("4", 0.50, 0.040),
    ]
    figure = _pareto_figure(records, target_latency_ms=0.05, title="t")
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    (axes,) = figure.axes
    legends = [*figure.legends, *([axes.get_legend()] if axes.get_legend() else [])]
    assert legends
    points = axes.transData.transform([(r["latency_ms"], r["accuracy"]) for r in records])
    for legend in legends:
        box = legend.get_window_extent(renderer)
        assert not box.overlaps(axes.get_window_extent(renderer)), "the legend overlaps the axes"
        covered = [tuple(p) for p in points if box.contains(*p)]
        assert not covered, covered
    # Every trial is inside the axes, so drawn.
    inside = axes.get_window_extent(renderer)
    assert all(inside.contains(*p) for p in points)
    png = plot_pareto(records, target_latency_ms=0.05)
    import matplotlib.image

    image = matplotlib.image.imread(io.BytesIO(png), format="png")
    assert image.shape[:2] == (450, 600) and np.ptp(image) > 0


@pytest.mark.parametrize("digits", [1, 4, 12])
def test_distinct_numbers_respects_its_minimum(digits):
    assert distinct_numbers([3.14159265], digits=digits) == [f"{3.14159265:.{digits}g}"]
