"""Tests of the NAS-Bench-201 table, the reward, ranking and the distinct-budget search harness."""

import pathlib

import nasbench201 as nb  # benchmarks/nasbench201.py, put on sys.path by this folder's conftest
import numpy as np
import pytest


@pytest.fixture(scope="module")
def table():
    # The repository's gzipped copy of the whole table: these tests run from any clone.
    return nb.NB201Table(nb.FIXTURE_PATH)


@pytest.fixture(scope="module")
def rewards(table):
    return table.rewards()


def test_token_and_arch_string_round_trip():
    arch = "|nor_conv_3x3~0|+|skip_connect~0|none~1|+|nor_conv_1x1~0|avg_pool_3x3~1|nor_conv_3x3~2|"
    assert nb.arch_str_to_tokens(arch) == [3, 1, 0, 2, 4, 3]
    assert nb.tokens_to_arch_str([3, 1, 0, 2, 4, 3]) == arch
    rng = np.random.default_rng(0)
    for _ in range(50):
        tokens = [int(t) for t in rng.integers(0, 5, size=6)]
        assert nb.arch_str_to_tokens(nb.tokens_to_arch_str(tokens)) == tokens
        assert nb.index_to_tokens(nb.tokens_to_index(tokens)) == tokens
    assert nb.tokens_to_index([4] * 6) == 15_624


@pytest.mark.parametrize(
    "bad, message",
    [
        ("|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|", "not '<op>~0'"),
        ("|none~1|+|none~0|none~1|+|none~0|none~1|none~2|", "not '<op>~0'"),
        ("|none~0|+|none~0|", "6 edges"),
    ],
)
def test_bad_arch_strings(bad, message):
    with pytest.raises(ValueError, match=message):
        nb.arch_str_to_tokens(bad)
    with pytest.raises(ValueError, match=r"ints in \[0, 5\)"):
        nb.tokens_to_arch_str([0, 0, 0, 0, 0, 5])


def test_table(table, rewards):
    assert len(table) == len(table.arch_strs) == 15_625
    assert len(set(table.arch_strs.tolist())) == 15_625
    assert np.all(np.isfinite(table.accuracy)) and np.all(table.latency_ms > 0)
    assert table.median_latency_ms == pytest.approx(10.68, abs=0.01)
    # Rows are indexed by tokens.
    row = 1234
    assert nb.tokens_to_index(nb.arch_str_to_tokens(table.arch_strs[row])) == row
    expected = table.accuracy[row] / 100 * (table.latency_ms[row] / table.median_latency_ms) ** -0.07
    assert rewards[row] == pytest.approx(expected)
    best = int(np.argmax(rewards))
    assert nb.NB201Table.rank(rewards[best], rewards) == 1
    assert nb.NB201Table.rank(float(np.sort(rewards)[-10]), rewards) == 10
    assert nb.NB201Table.rank(-1.0, rewards) == 15_626
    hard = table.rewards(alpha=0.0, beta=-1.0)
    fast = table.latency_ms <= table.median_latency_ms
    np.testing.assert_allclose(hard[fast], table.accuracy[fast] / 100)


def test_table_found_in_the_repository_without_the_shared_folder(tmp_path, monkeypatch):
    monkeypatch.delenv(nb.ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    # As in a clone on a machine without the shared folder: no parent holds it.
    monkeypatch.setattr(nb, "_RELATIVE_PATH", pathlib.Path("no-such-folder", "table.csv"))
    assert nb.default_table_path() == nb.FIXTURE_PATH
    monkeypatch.setattr(nb, "FIXTURE_PATH", tmp_path / "absent.csv.gz")
    with pytest.raises(FileNotFoundError, match="KERAS_MNAS_NB201"):
        nb.default_table_path()


def test_table_path_from_environment(tmp_path, monkeypatch):
    missing = tmp_path / "nope.csv"
    monkeypatch.setenv(nb.ENV_VAR, str(missing))
    with pytest.raises(FileNotFoundError, match="KERAS_MNAS_NB201"):
        nb.default_table_path()
    partial = tmp_path / "partial.csv"
    partial.write_text(
        "arch_idx,arch_str,acc_cifar10,lat_pixel3_ms\n"
        "0,|none~0|+|none~0|none~1|+|none~0|none~1|none~2|,10.0,0.01\n"
    )
    monkeypatch.setenv(nb.ENV_VAR, str(partial))
    assert nb.default_table_path() == partial
    with pytest.raises(ValueError, match="lacks 15624 of the 15625"):
        nb.NB201Table()


class _Repeater:
    """Proposes each new architecture three times in a row, and records what it is told."""

    def __init__(self):
        self.count = 0
        self.observed = []

    def sample(self):
        tokens = nb.index_to_tokens(self.count // 3)
        self.count += 1
        return tokens, [0.0] * 6

    def observe(self, tokens, log_probs, reward):
        self.observed.append((nb.tokens_to_index(tokens), reward))


def test_harness_counts_distinct_architectures_and_reuses_rewards():
    rewards = np.linspace(0.0, 1.0, 15_625)[::-1].copy()  # architecture 0 is the best
    strategy = _Repeater()
    result = nb.run_search(strategy, 10, rewards=rewards)
    assert result.distinct == 10 and result.proposals == 28 and not result.hit_proposal_cap
    # Every proposal, repeats included, was observed, with the cached reward.
    assert len(strategy.observed) == 28
    assert all(reward == rewards[index] for index, reward in strategy.observed)
    assert len(result.best_rewards) == 10 and result.best_at(10) == rewards[0]
    assert result.best_tokens == [0] * 6

    class Stuck(_Repeater):
        def sample(self):
            return [1] * 6, [0.0] * 6

    stuck = nb.run_search(Stuck(), 10, rewards=rewards, max_proposals=50)
    assert stuck.distinct == 1 and stuck.proposals == 50 and stuck.hit_proposal_cap
    assert stuck.best_at(10) == stuck.best_at(1)
    with pytest.raises(ValueError, match="max_proposals must be >= budget_distinct"):
        nb.run_search(Stuck(), 10, rewards=rewards, max_proposals=5)
    with pytest.raises(ValueError, match="budget_distinct` must be an integer >= 1"):
        nb.run_search(Stuck(), 0, rewards=rewards)


def test_random_search_is_distinct_and_seeded():
    rewards = np.random.default_rng(0).random(15_625)
    a = nb.run_search("random", 300, seed=1, rewards=rewards)
    b = nb.run_search("random", 300, seed=1, rewards=rewards)
    assert a.distinct == a.proposals == 300  # without replacement: never a repeat
    assert a.best_rewards == b.best_rewards
    assert np.all(np.diff(a.best_rewards) >= 0)
    # Best of 300 uniform draws: its rank is near 15,625 / 301 ~ 52, not anywhere in the table.
    assert nb.NB201Table.rank(a.best_at(300), rewards) < 300


def test_controller_strategy_runs(rewards):
    from keras_mnas.search import ControllerConfig

    result = nb.run_search(ControllerConfig(units=16), 30, seed=0, rewards=rewards)
    assert result.distinct == 30 and result.proposals >= 30
    assert len(result.stats) == result.proposals // 20
