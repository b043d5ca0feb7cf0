"""Float, post-training int8 and quantization-aware int8 MnasNets on digits: accuracy, latency, file size.

    python benchmarks/quantization.py [--epochs 15] [--qat-epochs 2] [--search-trials 8] [--markdown out.md]

Data: scikit-learn's 1,797 handwritten digits (no download), 8x8 upscaled to 32x32x1 (nearest neighbour),
split 1,437 training / 360 test images with a fixed seed. 32x32 keeps the whole run within about half an
hour on two cores; the digits hold 8x8 pixels of information, which 64x64 would not add to.

Models: MnasNet-A1, MnasNet-B1 and MnasNet-Small (the reference block strings, full width, 1280-wide head),
and the best architecture of a short int8-aware search (`MnasTuner(quantization="int8", evaluate_int8=True)`
over the space of `examples/search_digits.py`: MobileNetV2's first five blocks, width x0.35, head 256; its
candidates train on 1,197 of the training images and are validated on the other 240, never on the test
images). Every model is trained from scratch the same way: Adam 1e-3, `--epochs` epochs, batch 32, batch
normalization momentum 0.9 (a short training leaves the reference's 0.99 moving averages unsettled).

For each model, on the 360 test images:

- float: the Keras model's accuracy, and the float32 TFLite model's latency and size;
- PTQ int8: full-integer post-training quantization calibrated on 100 training images
  (`keras_mnas.quantization.post_training_quantize`), run with LiteRT;
- QAT int8: `--qat-epochs` epochs of quantization-aware fine-tuning from the float model (Adam 1e-4,
  `quantize_aware_train`), exported with `export_int8`, run with LiteRT. The fine-tuning is extra training,
  so the table also gives the float model fine-tuned for the same epochs the same way ("float + QAT
  epochs"): QAT int8 against that column is the cost of int8 after training alike.

Latency: `HostLatency` (single thread, LiteRT with XNNPACK, `--runs` timed runs in `--repeats` fresh
interpreters, median of medians) on this CPU. One seed: on 360 test images one image is 0.28 points.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
from sklearn.datasets import load_digits

from keras_mnas import build_model
from keras_mnas.latency import HostLatency, convert_to_tflite
from keras_mnas.quantization import (
    evaluate_tflite,
    export_int8,
    post_training_quantize,
    quantize_aware_train,
)
from keras_mnas.search import MOBILENET_V2_SKELETON, MnasSearchSpace, MnasTuner

SHAPE = (32, 32, 1)
REFERENCE_MODELS = {"a1": "MnasNet-A1", "b1": "MnasNet-B1", "small": "MnasNet-Small"}
SEARCHED = "searched (int8-aware)"
BN_MOMENTUM = 0.9


def load_data(seed: int):
    """Digits as 32x32x1 images in [0, 1]: (x_train, y_train), (x_test, y_test), 1,437 / 360."""
    digits = load_digits()
    images = np.kron(digits.images.astype("float32") / 16.0, np.ones((4, 4), "float32"))[..., None]
    order = np.random.default_rng(seed).permutation(len(images))
    images, labels = images[order], digits.target[order]
    split = int(0.8 * len(images))
    return (images[:split], labels[:split]), (images[split:], labels[split:])


def search_space() -> MnasSearchSpace:
    return MnasSearchSpace(
        MOBILENET_V2_SKELETON[:5], input_shape=SHAPE, classes=10, depth_multiplier=0.35, head_filters=256
    )


def searched_architecture(x, y, args, latency: HostLatency):
    """The best architecture of a short int8-aware search, validated on part of the training images."""
    space = search_space()
    x_fit, y_fit, x_val, y_val = x[:-240], y[:-240], x[-240:], y[-240:]
    skeleton = space.build(space.decode(space.default_values()))
    target_ms = latency.measure(skeleton, quantization="int8", representative_data=x_fit[:100]).median_ms
    print(f"search: target latency {target_ms:.3f} ms (the skeleton, int8)", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="keras_mnas_quant_search_") as directory:
        tuner = MnasTuner(
            space=space,
            latency=latency,
            target_latency_ms=round(target_ms, 4),
            quantization="int8",
            evaluate_int8=True,
            max_trials=args.search_trials,
            controller={"minibatch_size": 4},
            seed=args.seed,
            directory=directory,
            project_name="quantization_benchmark",
        )
        tuner.search(
            x_fit, y_fit, validation_data=(x_val, y_val), epochs=args.search_epochs, batch_size=32, verbose=0
        )
        arch = tuner.best_architectures()[0]
    keras.backend.clear_session()
    return space, arch


def build(key: str, space: MnasSearchSpace | None, arch) -> keras.Model:
    if key == SEARCHED:
        return space.build(arch, bn_momentum=BN_MOMENTUM)
    return build_model(key, input_shape=SHAPE, classes=10, bn_momentum=BN_MOMENTUM)


def evaluate_model(model, data, args, latency: HostLatency) -> dict:
    (x, y), (x_test, y_test) = data
    model.compile(
        keras.optimizers.Adam(1e-3),
        "sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=False,
    )
    model.fit(x, y, epochs=args.epochs, batch_size=32, verbose=0)
    row = {
        "params": sum(int(np.prod(w.shape)) for w in model.trainable_weights),
        "float_accuracy": float(model.evaluate(x_test, y_test, verbose=0)[1]),
    }
    float_bytes = convert_to_tflite(model)
    ptq_bytes = post_training_quantize(model, x, num_samples=100, seed=args.seed)
    qat_model = quantize_aware_train(
        model, x, y, epochs=args.qat_epochs, learning_rate=1e-4, batch_size=32, verbose=0
    )
    qat_bytes = export_int8(qat_model)
    for kind, tflite_bytes, quantization in (
        ("float", float_bytes, "float32"),
        ("ptq", ptq_bytes, "int8"),
        ("qat", qat_bytes, "int8"),
    ):
        row[f"{kind}_kb"] = len(tflite_bytes) / 1024
        row[f"{kind}_latency"] = latency.measure_tflite(tflite_bytes, quantization=quantization)
        if kind != "float":
            row[f"{kind}_accuracy"] = evaluate_tflite(tflite_bytes, x_test, y_test)
    row["float_tflite_accuracy"] = evaluate_tflite(float_bytes, x_test, y_test)
    # The float model fine-tuned as long as QAT fine-tunes, with the same optimizer: separates what QAT
    # gains from int8-aware training from what it gains from the extra epochs.
    model.compile(
        keras.optimizers.Adam(1e-4),
        "sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=False,
    )
    model.fit(x, y, epochs=args.qat_epochs, batch_size=32, verbose=0)
    row["float_finetuned_accuracy"] = float(model.evaluate(x_test, y_test, verbose=0)[1])
    return row


def table(rows: dict, args, latency: HostLatency) -> str:
    header = [
        "model",
        "params",
        "float acc",
        "float + QAT epochs acc",
        "PTQ int8 acc",
        "QAT int8 acc",
        "float ms",
        "PTQ int8 ms",
        "QAT int8 ms",
        "float KB",
        "int8 KB (PTQ / QAT)",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def ms(result):
        return f"{result.median_ms:.3f}" + (" (!)" if result.unstable else "")

    for name, row in rows.items():
        cells = [
            name,
            f"{row['params'] / 1e6:.2f}M",
            f"{100 * row['float_accuracy']:.1f}%",
            f"{100 * row['float_finetuned_accuracy']:.1f}%",
            f"{100 * row['ptq_accuracy']:.1f}%",
            f"{100 * row['qat_accuracy']:.1f}%",
            ms(row["float_latency"]),
            ms(row["ptq_latency"]),
            ms(row["qat_latency"]),
            f"{row['float_kb']:.0f}",
            f"{row['ptq_kb']:.0f} / {row['qat_kb']:.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    provenance = next(iter(rows.values()))["float_latency"].provenance
    cpu = provenance.get("cpu", platform.processor() or platform.machine())
    tflite_gap = max(abs(r["float_tflite_accuracy"] - r["float_accuracy"]) for r in rows.values())
    lines += [
        "",
        f"Digits 32x32x1, 1,437 training / 360 test images, seed {args.seed}; {args.epochs} float epochs, "
        f"{args.qat_epochs} QAT epochs; search: {args.search_trials} trials x {args.search_epochs} epochs. "
        f"Host: {cpu}; {latency.threads} thread, at least {latency.runs} runs and "
        f"{latency.min_seconds:g} s x {latency.repeats} fresh interpreters, "
        f"median of medians; LiteRT {provenance.get('litert', '?')}, TensorFlow "
        f"{provenance.get('tensorflow', '?')}. (!) marks an unstable figure (the middle 90% of runs spread "
        "like a CV above 5%). Float accuracy is the Keras model's; the "
        f"float TFLite model's agreed within {100 * tflite_gap:.1f} points.",
    ]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15, help="float training epochs of every model")
    parser.add_argument("--qat-epochs", type=int, default=2, help="quantization-aware fine-tuning epochs")
    parser.add_argument("--search-trials", type=int, default=8, help="0 skips the searched model")
    parser.add_argument("--search-epochs", type=int, default=2, help="training epochs of each candidate")
    parser.add_argument("--runs", type=int, default=100, help="timed runs per latency measurement")
    parser.add_argument("--repeats", type=int, default=3, help="fresh interpreters per latency measurement")
    parser.add_argument(
        "--only", nargs="*", choices=list(REFERENCE_MODELS), help="reference models to run (default: all)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--markdown", help="also write the table to this file")
    args = parser.parse_args(argv)
    for name in ("epochs", "qat_epochs", "search_epochs", "runs", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")

    started = time.time()
    data = load_data(args.seed)
    latency = HostLatency(runs=args.runs, repeats=args.repeats)
    keys = list(args.only) if args.only is not None else list(REFERENCE_MODELS)
    space = arch = None
    if args.search_trials > 0:
        space, arch = searched_architecture(*data[0], args, HostLatency(runs=30, warmup_runs=5))
        print(
            f"search: best architecture {arch} ({time.time() - started:.0f} s)", file=sys.stderr, flush=True
        )
        keys.append(SEARCHED)
    rows = {}
    for key in keys:
        name = REFERENCE_MODELS.get(key, key)
        keras.utils.set_random_seed(args.seed)
        rows[name] = evaluate_model(build(key, space, arch), data, args, latency)
        print(f"measured {name} ({time.time() - started:.0f} s)", file=sys.stderr, flush=True)
        keras.backend.clear_session()
    text = table(rows, args, latency)
    print(text)
    if arch is not None:
        print(f"\nSearched architecture: {arch}")
    print(f"\nTotal time: {(time.time() - started) / 60:.1f} min")
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
