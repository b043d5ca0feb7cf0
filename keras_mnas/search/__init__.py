"""MnasNet's platform-aware architecture search for KerasTuner.

- `MnasSearchSpace` / `MnasHyperModel`: the factorized hierarchical search space as a KerasTuner HyperModel.
- `Controller` / `ControllerConfig`: the LSTM policy trained with PPO and its settings; `MnasOracle`: the
  KerasTuner Oracle it drives; `EvolutionOracle`: regularized evolution, for any discrete space.
- `MnasReward`: accuracy traded against latency (`AbsoluteReward`: TuNAS's form); `MnasTuner`: the whole
  search from a Keras script.
- `Supernet`: the weight-sharing supernet of a space, whose paths extract to stand-alone candidates;
  `train_supernet`, `PathScorer` and `evaluate_path`: one-shot training and scoring; `proxy_check`:
  whether a cheap score ranks candidates as full training does.
- `SearchProject`: reads a search directory's trials without the script that ran it.

The names are imported on first use, so reading a search's results (`SearchProject`, `pareto_front`) does
not import TensorFlow, Keras or KerasTuner.
"""

from __future__ import annotations

from keras_mnas.utils.lazy import lazy_attributes

# Public name -> the module that defines it.
_EXPORTS = {
    "MOBILENET_V2_SKELETON": "keras_mnas.search.space",
    "AbsoluteReward": "keras_mnas.search.reward",
    "Controller": "keras_mnas.search.controller",
    "ControllerConfig": "keras_mnas.search.controller",
    "EvolutionOracle": "keras_mnas.search.evolution",
    "MnasHyperModel": "keras_mnas.search.hypermodel",
    "MnasOracle": "keras_mnas.search.oracle",
    "MnasReward": "keras_mnas.search.reward",
    "MnasSearchSpace": "keras_mnas.search.space",
    "MnasTuner": "keras_mnas.search.tuner",
    "OneShotHyperModel": "keras_mnas.search.one_shot",
    "PathScorer": "keras_mnas.search.one_shot",
    "SearchProject": "keras_mnas.search.project",
    "SkeletonBlock": "keras_mnas.search.space",
    "Supernet": "keras_mnas.search.supernet",
    "evaluate_path": "keras_mnas.search.one_shot",
    "kendall_tau": "keras_mnas.search.proxy",
    "pareto_front": "keras_mnas.search.results",
    "plot_pareto": "keras_mnas.search.results",
    "proxy_check": "keras_mnas.search.proxy",
    "train_supernet": "keras_mnas.search.one_shot",
}

__all__ = [
    "MOBILENET_V2_SKELETON",
    "AbsoluteReward",
    "Controller",
    "ControllerConfig",
    "EvolutionOracle",
    "MnasHyperModel",
    "MnasOracle",
    "MnasReward",
    "MnasSearchSpace",
    "MnasTuner",
    "OneShotHyperModel",
    "PathScorer",
    "SearchProject",
    "SkeletonBlock",
    "Supernet",
    "evaluate_path",
    "kendall_tau",
    "pareto_front",
    "plot_pareto",
    "proxy_check",
    "train_supernet",
]


__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS)
