"""A deterministic latency source for the lookup-table tests: its latency is a function of mult-adds."""

from keras_mnas.architecture import ArchSpec
from keras_mnas.counting import count_model_macs
from keras_mnas.latency import LatencyResult, LatencySource

SHAPE = (32, 32, 3)
NETWORK = dict(input_shape=SHAPE, classes=10)
TWO_BLOCKS = ArchSpec.from_strings(
    ["r1_k3_s22_e3_i16_o16", "r2_k5_s22_i16_o24_se0.25_dconv"], stem_filters=16
)
FOUR_BLOCKS = ArchSpec.from_strings(
    [
        "r2_k3_s22_e6_i16_o24_poolskip",
        "r1_k3_s22_i24_o32_conv",
        "r2_k5_s11_e3_i32_o32_se0.25",
        "r1_k3_s22_e6_i32_o40",
    ],
    stem_filters=16,
)


class FakeSource(LatencySource):
    """Latency = overhead + ms_per_mac * mult-adds, times `network_factor` for a whole network.

    A one-piece model of the table has a stem or a head, never both; a whole network has both.
    """

    name = "fake"

    def __init__(
        self,
        *,
        overhead_ms=0.05,
        ms_per_mac=1e-6,
        network_factor=1.0,
        normalization_ms=0.0,
        label="a",
        spread=None,
    ):
        self.spread = spread  # (cv, robust_cv) of every result, when given
        self.normalization_ms = normalization_ms  # the input normalisation has no mult-adds
        self.overhead_ms = overhead_ms
        self.ms_per_mac = ms_per_mac
        self.network_factor = network_factor
        self.label = label
        self.measured = []

    def config(self):
        return {**super().config(), "label": self.label}

    def expected(self, model):
        names = {layer.name for layer in model.layers}
        factor = self.network_factor if {"stem_conv", "top_conv"} <= names else 1.0
        normalization = self.normalization_ms if "normalization" in names else 0.0
        return self.overhead_ms + factor * self.ms_per_mac * count_model_macs(model) + normalization

    def measure(self, model, *, quantization="float32", representative_data=None):
        self.measured.append((model, quantization, representative_data))
        ms = self.expected(model)
        cv, robust_cv = self.spread or (0.0, None)
        return LatencyResult(
            ms,
            ms,
            ms,
            cv * ms,
            cv,
            7,
            1,
            1,
            "fake:dev",
            quantization,
            provenance={"device": "fake", "model": model.name},
            robust_cv=robust_cv,
        )
