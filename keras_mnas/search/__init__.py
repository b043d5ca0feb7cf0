"""MnasNet's platform-aware architecture search for KerasTuner.

- `MnasSearchSpace` / `MnasHyperModel`: the factorized hierarchical search space as a KerasTuner HyperModel.
- `Controller` / `ControllerConfig`: the LSTM policy trained with PPO and its settings; `MnasOracle`: the
  KerasTuner Oracle it drives.
- `MnasReward`: accuracy traded against latency; `MnasTuner`: the whole search from a Keras script.
- `SearchProject`: reads a search directory's trials without the script that ran it.
"""

from keras_mnas.search.controller import Controller, ControllerConfig
from keras_mnas.search.oracle import MnasOracle
from keras_mnas.search.project import SearchProject
from keras_mnas.search.results import pareto_front, plot_pareto
from keras_mnas.search.reward import MnasReward
from keras_mnas.search.space import MOBILENET_V2_SKELETON, MnasHyperModel, MnasSearchSpace, SkeletonBlock
from keras_mnas.search.tuner import MnasTuner

__all__ = [
    "MOBILENET_V2_SKELETON",
    "Controller",
    "ControllerConfig",
    "MnasHyperModel",
    "MnasOracle",
    "MnasReward",
    "MnasSearchSpace",
    "MnasTuner",
    "SearchProject",
    "SkeletonBlock",
    "pareto_front",
    "plot_pareto",
]
