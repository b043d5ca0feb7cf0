"""Every MnasNet variant beside keras.applications' MobileNets: size, mult-adds and host TFLite latency.

    python benchmarks/applications.py [--runs 100] [--repeats 3] [--no-int8] [--markdown out.md]

For each model: trainable parameters, mult-adds at 224x224, and the median single-threaded LiteRT latency on
this CPU with its coefficient of variation, for float32 and full-integer int8 TFLite models, plus the ratio of
each latency to MobileNetV2 1.0 measured in the same run. Prints one markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

from keras_mnas import applications
from keras_mnas.counting import count_model_macs
from keras_mnas.latency import HostLatency

SHAPE = (224, 224, 3)

MODELS = {
    "MobileNetV2 1.0": lambda: keras.applications.MobileNetV2(weights=None, input_shape=SHAPE),
    "MobileNetV3Small": lambda: keras.applications.MobileNetV3Small(weights=None, input_shape=SHAPE),
    "MobileNetV3Large": lambda: keras.applications.MobileNetV3Large(weights=None, input_shape=SHAPE),
    "MnasNet-A1": lambda: applications.MnasNetA1(input_shape=SHAPE),
    "MnasNet-A1 x0.5": lambda: applications.MnasNetA1(input_shape=SHAPE, depth_multiplier=0.5),
    "MnasNet-A1 x1.4": lambda: applications.MnasNetA1(input_shape=SHAPE, depth_multiplier=1.4),
    "MnasNet-B1": lambda: applications.MnasNetB1(input_shape=SHAPE),
    "MnasNet-B1 x0.5": lambda: applications.MnasNetB1(input_shape=SHAPE, depth_multiplier=0.5),
    "MnasNet-Small": lambda: applications.MnasNetSmall(input_shape=SHAPE),
    "MnasNet-D1": lambda: applications.MnasNetD1(input_shape=SHAPE),
    "MnasNet-D1-320": lambda: applications.MnasNetD1_320(input_shape=SHAPE),
}
BASELINE = "MobileNetV2 1.0"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100, help="timed runs per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="fresh interpreters per measurement")
    parser.add_argument("--no-int8", action="store_true", help="skip the int8 models")
    parser.add_argument("--only", nargs="*", choices=list(MODELS), help="model names to run (default: all)")
    parser.add_argument("--markdown", help="also write the table to this file")
    args = parser.parse_args(argv)

    source = HostLatency(runs=args.runs, repeats=args.repeats)
    # Calibration data for int8: random [0, 255] images. Latency does not depend on the ranges it learns.
    calibration = np.random.default_rng(0).uniform(0, 255, (8, *SHAPE)).astype("float32")
    quantizations = ["float32"] if args.no_int8 else ["float32", "int8"]
    names = args.only or list(MODELS)
    if BASELINE not in names:
        names = [BASELINE, *names]
    rows = {}
    started = time.time()
    for name in names:
        model = MODELS[name]()
        row = {
            "params": sum(int(np.prod(w.shape)) for w in model.trainable_weights),
            "macs": count_model_macs(model),
        }
        for quantization in quantizations:
            row[quantization] = source.measure(
                model, quantization=quantization, representative_data=calibration
            )
        rows[name] = row
        print(f"measured {name} ({time.time() - started:.0f} s)", file=sys.stderr, flush=True)
        keras.backend.clear_session()

    header = ["model", "params", "mult-adds"]
    for q in quantizations:
        header += [f"{q} median ms", f"{q} spread", f"{q} / MobileNetV2"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, row in rows.items():
        cells = [name, f"{row['params'] / 1e6:.2f}M", f"{row['macs'] / 1e6:.1f}M"]
        for q in quantizations:
            result, baseline = row[q], rows[BASELINE][q]
            cells += [
                f"{result.median_ms:.2f}",
                f"{100 * result.spread:.1f}%" + (" (!)" if result.unstable else ""),
                f"{result.median_ms / baseline.median_ms:.2f}",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    any_result = rows[BASELINE]["float32"]
    lines.append("")
    lines.append(
        f"Host: {any_result.provenance.get('cpu', platform.processor() or platform.machine())}; "
        f"{any_result.threads} thread, at least {source.runs} runs and {source.min_seconds:g} s x "
        f"{source.repeats} fresh interpreters, median of "
        f"medians; LiteRT {any_result.provenance.get('litert', '?')}, "
        f"TensorFlow {any_result.provenance.get('tensorflow', '?')}. Spread: the middle 90% of the runs as a "
        "coefficient of variation; (!) above 5%, an unstable figure."
    )
    table = "\n".join(lines)
    print(table)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
