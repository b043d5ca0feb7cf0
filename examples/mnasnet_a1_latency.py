"""Build MnasNet-A1, print its summary, convert it to TFLite and time it on this CPU.

    python examples/mnasnet_a1_latency.py [--arch a1] [--resolution 224] [--int8]

The figure is the median of single-threaded LiteRT runs (XNNPACK), as `keras_mnas.latency.HostLatency`
measures it for the search.
"""

import argparse

import numpy as np

from keras_mnas.utils.quiet import quiet_tensorflow_startup

CONSTRUCTORS = {
    "a1": "MnasNetA1",
    "b1": "MnasNetB1",
    "small": "MnasNetSmall",
    "d1": "MnasNetD1",
    "d1_320": "MnasNetD1_320",
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=sorted(CONSTRUCTORS), default="a1")
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--depth-multiplier", type=float, default=1.0)
    parser.add_argument("--int8", action="store_true", help="also time the full-integer int8 model")
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()

    quiet_tensorflow_startup()  # before Keras imports TensorFlow: no oneDNN, CUDA or cuInit lines
    from keras_mnas import applications
    from keras_mnas.counting import count_cost
    from keras_mnas.latency import HostLatency

    shape = (args.resolution, args.resolution, 3)
    constructor = getattr(applications, CONSTRUCTORS[args.arch])
    model = constructor(input_shape=shape, depth_multiplier=args.depth_multiplier)
    model.summary(line_length=110, expand_nested=False, show_trainable=False)
    cost = count_cost(args.arch, input_shape=shape, depth_multiplier=args.depth_multiplier)
    print(f"\n{model.name}: {cost.trainable_params:,} trainable parameters, {cost.macs / 1e6:.1f}M mult-adds")

    source = HostLatency(runs=args.runs)
    quantizations = ["float32"] + (["int8"] if args.int8 else [])
    # Calibration images for int8: random [0, 255] RGB, enough to exercise the quantization ranges.
    calibration = np.random.default_rng(0).uniform(0, 255, (16, *shape)).astype("float32")
    for quantization in quantizations:
        result = source.measure(model, quantization=quantization, representative_data=calibration)
        print(
            f"TFLite {quantization:7s} on this CPU ({result.threads} thread): "
            f"median {result.median_ms:.2f} ms, "
            f"p90 {result.p90_ms:.2f} ms, spread {100 * result.spread:.1f}% over {result.runs} runs, "
            f"{result.tflite_bytes / 2**20:.1f} MiB"
            + ("  [unstable: spread above 5%]" if result.unstable else "")
        )


if __name__ == "__main__":
    main()
