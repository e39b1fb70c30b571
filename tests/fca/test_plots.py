import numpy as np

from fca.plots import running_mean


def test_running_mean_averages_each_value_with_the_ones_before_it():
    x = np.array([1.0, 3.0, 5.0, 7.0, 9.0])
    assert np.allclose(running_mean(x, 2), [1.0, 2.0, 4.0, 6.0, 8.0])
    assert np.allclose(running_mean(x, 10), np.cumsum(x) / np.arange(1, 6))  # a window longer than the run: the mean so far
    assert np.array_equal(running_mean(x, 1), x)
