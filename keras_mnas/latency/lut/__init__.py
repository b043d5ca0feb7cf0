"""Latency predicted from a lookup table of per-layer timings, calibrated on a few end-to-end measurements.

FBNet, ProxylessNAS and HW-NAS-Bench predict a network's latency as the sum of per-layer entries of a lookup
table keyed by the layer's configuration and input shape. `LatencyLookupTable` does that for keras-mnas
architectures, on any `LatencySource`. The package has four parts:

- `configs`: `LayerConfig`, one entry (the stem, a searched layer, the head, ...) and its text key;
  `network_configs` lists the entries of an architecture, `model_configs` those of a built model.
- `table`: `LatencyLookupTable`, which profiles entries on a source, predicts from an `ArchSpec` without
  building a model, and saves itself as JSON with the provenance of every measurement.
- `kernels`: what the runtime runs for each entry (nothing fuses across entries), and the features of an
  entry's in-network cost (`entry_features`).
- `calibration`: `Calibration`, `fit_terms` (one weight per kernel feature) and `fit_line` (a line on the
  sum of entries), from entries to measured latencies, and `prediction_report` and `spearman` (how well
  predictions match measurements).

The helpers that know a search space (profile every entry of a space, predict a candidate from its
hyperparameters, skip candidates far over a budget) are in `keras_mnas.search.latency_table`.

Example:

```python
from keras_mnas.latency import HostLatency, LatencyLookupTable
from keras_mnas.search import MnasSearchSpace
from keras_mnas.search.latency_table import predict_candidate, profile_space

space = MnasSearchSpace(input_shape=(96, 96, 3))
lut = LatencyLookupTable(profiler=HostLatency(), path="lut-host-96.json")
profile_space(lut, space)                          # every distinct layer of the space, with a progress line
lut.calibrate(space.sample_architectures(10, seed=0), **space.network_kwargs())

lut = LatencyLookupTable.load("lut-host-96.json")
lut.predict("a1", input_shape=(96, 96, 3))         # milliseconds, without building anything
predict_candidate(lut, space, space.default_values())
```
"""

from keras_mnas.latency.lut.calibration import (
    Calibration,
    fit_line,
    fit_terms,
    prediction_report,
    spearman,
)
from keras_mnas.latency.lut.configs import (
    KINDS,
    NETWORK_ARGS,
    LayerConfig,
    model_configs,
    network_configs,
    network_keys,
)
from keras_mnas.latency.lut.kernels import KERNEL_TYPES, entry_features, kernel_type
from keras_mnas.latency.lut.table import (
    CALIBRATION_METHODS,
    FORMAT_NAME,
    FORMAT_VERSION,
    KERNEL_MEASUREMENTS,
    ON_MISSING,
    LatencyLookupTable,
    MissingEntryError,
    budget_limit,
)

__all__ = [
    "CALIBRATION_METHODS",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "KERNEL_MEASUREMENTS",
    "KERNEL_TYPES",
    "KINDS",
    "NETWORK_ARGS",
    "ON_MISSING",
    "Calibration",
    "LatencyLookupTable",
    "LayerConfig",
    "MissingEntryError",
    "budget_limit",
    "entry_features",
    "fit_line",
    "fit_terms",
    "kernel_type",
    "model_configs",
    "network_configs",
    "network_keys",
    "prediction_report",
    "spearman",
]
