import numpy as np
import pytest

from keras_mnas.utils import checks


def test_check_int_accepts_numpy_and_refuses_bool_float_and_out_of_bounds():
    assert checks.check_int("n", np.int64(3), minimum=1) == 3
    assert type(checks.check_int("n", np.int64(3))) is int
    for bad in (True, 3.0, "3", None, 0, 11):
        with pytest.raises(ValueError, match=r"`n` must be an integer >= 1 and <= 10; received"):
            checks.check_int("n", bad, minimum=1, maximum=10)
    assert checks.check_int("n", None, allow_none=True) is None


def test_check_number_refuses_overflow_nan_and_open_bounds_with_value_error():
    assert checks.check_number("x", 0.5, low=0, high=1, low_open=True) == 0.5
    for bad in (2**1100, float("nan"), float("inf"), False, "1", 0):
        with pytest.raises(ValueError, match="`x` must be a finite number > 0"):
            checks.check_number("x", bad, low=0, low_open=True)
    with pytest.raises(ValueError, match="< 1"):
        checks.check_number("x", 1, high=1, high_open=True)


def test_check_seconds_and_zero():
    assert checks.check_seconds("t", 0, allow_zero=True) == 0.0
    with pytest.raises(ValueError, match=r"`t` must be a finite number of seconds > 0; received 0"):
        checks.check_seconds("t", 0)
    with pytest.raises(ValueError, match="seconds >= 0"):
        checks.check_seconds("t", -1, allow_zero=True)


def test_check_bool_refuses_stand_ins_with_type_error():
    assert checks.check_bool("b", np.True_) is True
    for bad in ("no", 0, 1, None):
        with pytest.raises(TypeError, match="`b` must be True or False"):
            checks.check_bool("b", bad)


def test_check_choice_does_not_confuse_bools_and_ints():
    assert checks.check_choice("q", "int8", ("float32", "int8")) == "int8"
    with pytest.raises(ValueError, match=r"one of \(1, 2\)"):
        checks.check_choice("q", True, (1, 2))
    with pytest.raises(ValueError, match="one of"):
        checks.check_choice("q", [1], (1, 2))


def test_check_choices_needs_distinct_items_passing_the_check():
    odd = lambda k: checks.is_integer(k) and k % 2 == 1  # noqa: E731
    assert checks.check_choices("k", [3, 5], odd, "odd integers") == (3, 5)
    for bad in ([], "35", [3, 4], None):
        with pytest.raises(ValueError, match="`k` must be a non-empty list of odd integers"):
            checks.check_choices("k", bad, odd, "odd integers")
    with pytest.raises(ValueError, match="without repeats"):
        checks.check_choices("k", [3, 3], odd, "odd integers")


def test_long_values_are_shortened_in_messages():
    with pytest.raises(ValueError) as error:
        checks.check_int("n", "9" * 5000)
    assert len(str(error.value)) < 400
    assert "5002 characters" in str(error.value)
