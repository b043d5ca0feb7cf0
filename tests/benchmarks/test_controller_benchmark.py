import controller as bench  # benchmarks/controller.py, put on sys.path by this folder's conftest
import nasbench201 as nb
import pytest


def check_search(result, budget):
    rewards = nb.NB201Table().rewards()
    assert all(reward == rewards[index] for index, reward in result["history"])
    assert len({index for index, _ in result["history"]}) == budget
    assert len(result["oracle_cpu_seconds"]) == len(result["history"])


def test_tpe_row_counts_repeats_as_proposals_not_architectures():
    pytest.importorskip("optuna")
    result = bench.run_tpe(seed=3, budget=15)
    check_search(result, 15)
    assert bench.run_tpe(seed=3, budget=15)["history"] == result["history"], "seeded"


def test_evolution_row_drives_a_kerastuner_search():
    result = bench.run_one(("evolution", 3, 12))
    check_search(result, 12)
    assert len(result["history"]) == 12, "EvolutionOracle never re-evaluates an architecture"
