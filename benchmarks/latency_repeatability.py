"""Does a host latency figure repeat, and does the "unstable" flag say when it does not?

    python benchmarks/latency_repeatability.py [--space digits|mnasnet] [--archs 5] [--measurements 10]
                                               [--runs 30] [--warmup-runs 5] [--min-seconds 0.1]
                                               [--repeats 1] [--seed 0]

Converts the search space's skeleton and `--archs` random architectures of it to TFLite once each, then
measures each model `--measurements` times with `HostLatency` (a fresh interpreter every time, as a search
or a lookup-table profile does) and prints, per model: the median figure, the spread *within* a measurement
that the flag judges (`robust_cv`, median over the measurements), the spread *between* the measurements'
figures (their coefficient of variation, and max over min), and how many measurements were flagged
unstable. A flag is right when the figure really moves by more than 5% between measurements. With
`--repeats` above 1 it also prints the cv between a measurement's fresh interpreters, and how often that
would have been right instead.

`--space digits` (the default) is the README's search: the first five MobileNetV2 blocks at 32x32x1, width
x0.35, models of tens of microseconds, timed with the example's `runs=30, warmup_runs=5`. `--space
mnasnet` is the default MnasNet space at 128x128 (1000 classes), models of milliseconds.

Run it on an otherwise idle machine: another process on the cores makes every figure move.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from quantization import search_space as digits_search_space  # the README's digits space, defined once

from keras_mnas.latency import HostLatency, convert_to_tflite
from keras_mnas.latency.base import UNSTABLE_SPREAD
from keras_mnas.search import MnasSearchSpace


def make_space(name: str) -> MnasSearchSpace:
    return digits_search_space() if name == "digits" else MnasSearchSpace(input_shape=(128, 128, 3))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", choices=("digits", "mnasnet"), default="digits")
    parser.add_argument("--archs", type=int, default=5, help="random architectures besides the skeleton")
    parser.add_argument("--measurements", type=int, default=10, help="fresh measurements of each model")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup-runs", type=int, default=5)
    parser.add_argument("--min-seconds", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=1, help="fresh interpreters within one measurement")
    parser.add_argument("--seed", type=int, default=0, help="seed of the architecture sampling")
    args = parser.parse_args(argv)
    if args.archs < 0 or args.measurements < 2:
        parser.error(
            f"--archs must be >= 0 and --measurements >= 2; received {args.archs} and {args.measurements}"
        )

    space = make_space(args.space)
    source = HostLatency(
        runs=args.runs, warmup_runs=args.warmup_runs, min_seconds=args.min_seconds, repeats=args.repeats
    )
    models = [("skeleton", space.default_values())] + [
        (f"random {i}", values) for i, values in enumerate(space.sample_values(args.archs, seed=args.seed))
    ]
    started = time.time()
    print(
        f"{args.space} space, {args.measurements} measurements per model, each at least {args.runs} runs and "
        f"{args.min_seconds:g} s x {args.repeats} repeat(s) after {args.warmup_runs} warm-up runs:"
    )
    columns = ["model", "median ms", "calls per measurement", "spread within (robust_cv)"]
    if args.repeats > 1:
        columns.append("cv between repeats")
    columns += ["cv between figures", "max / min figure", "flagged"]
    print("| " + " | ".join(columns) + " |")
    print("|---|" + "---|" * (len(columns) - 1))
    agreed = {"spread within": 0, "cv between repeats": 0}
    flagged_total = measurements = 0
    for label, values in models:
        tflite = convert_to_tflite(space.build(space.decode(values)))
        results = [source.measure_tflite(tflite) for _ in range(args.measurements)]
        figures = np.array([r.median_ms for r in results])
        between = float(np.std(figures, ddof=1) / np.mean(figures))
        # A judgement is right when it says "moves" exactly when the figure does move by more than the
        # threshold between measurements.
        moves = between > UNSTABLE_SPREAD
        flags = [r.unstable for r in results]
        agreed["spread within"] += sum(flag == moves for flag in flags)
        cells = [
            label,
            f"{np.median(figures):.4f}",
            str(int(np.median([r.runs for r in results]))),
            f"{np.median([r.spread for r in results]):.1%}",
        ]
        if args.repeats > 1:
            per_repeat = [np.asarray(r.provenance["per_repeat_median_ms"]) for r in results]
            repeat_cvs = [float(np.std(m, ddof=1) / np.mean(m)) for m in per_repeat]
            agreed["cv between repeats"] += sum((cv > UNSTABLE_SPREAD) == moves for cv in repeat_cvs)
            cells.append(f"{np.median(repeat_cvs):.1%}")
        cells += [f"{between:.1%}", f"{figures.max() / figures.min():.2f}", f"{sum(flags)} of {len(flags)}"]
        print("| " + " | ".join(cells) + " |")
        flagged_total += sum(flags)
        measurements += len(flags)
    print(
        f"\n{flagged_total} of {measurements} measurements flagged unstable (spread within above "
        f"{UNSTABLE_SPREAD:.0%})."
    )
    print(
        f"Right about whether the figure moves by more than {UNSTABLE_SPREAD:.0%} between measurements: "
        f"the flag's spread within, {agreed['spread within']} of {measurements}"
        + (
            f"; the cv between a measurement's repeats, {agreed['cv between repeats']} of {measurements}."
            if args.repeats > 1
            else "."
        )
    )
    print(f"Total {time.time() - started:.0f} s on {os.cpu_count()} cores.", file=sys.stderr)


if __name__ == "__main__":
    main()
