"""Tests of skflowsearch.plotting (Agg backend, tiny estimators)."""

import os

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402

from skflowsearch import CouplingFlow, StructureSearchFlow  # noqa: E402
from skflowsearch.plotting import (  # noqa: E402
    plot_masks,
    plot_samples,
    plot_search_history,
    save_search_plots,
)

TINY = dict(n_layers=2, hidden_layer_sizes=(8,), max_epochs=5, random_state=0, n_components=1)
TINY_SEARCH = dict(
    TINY, population_size=2, n_offspring=2, n_generations=1
)


@pytest.fixture(scope="module")
def X():
    rng = np.random.RandomState(0)
    A = rng.normal(size=(4, 4))
    return rng.normal(size=(80, 4)) @ A


@pytest.fixture(scope="module")
def search(X):
    return StructureSearchFlow(**TINY_SEARCH).fit(X)


@pytest.fixture(scope="module")
def flow(X):
    return CouplingFlow(**TINY).fit(X)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_plot_search_history(search):
    ax = plot_search_history(search)
    assert isinstance(ax, matplotlib.axes.Axes)
    # best and mean lines, plus the std band
    assert len(ax.get_lines()) == 2
    assert len(ax.collections) == 1
    n_generations = len(search.search_history_)
    for line in ax.get_lines():
        assert len(line.get_xdata()) == n_generations
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "best" in labels
    (best_line,) = [line for line in ax.get_lines() if line.get_label() == "best"]
    np.testing.assert_array_equal(best_line.get_ydata(), [r["best"] for r in search.search_history_])
    # The fitness is measured on the search's ranking rows, not the validation rows.
    assert "ranking-row" in ax.get_ylabel() and "validation" not in ax.get_ylabel()


def test_plot_search_history_with_size_penalty(X):
    search = StructureSearchFlow(**TINY_SEARCH, size_penalty=1e-3).fit(X)
    assert "size penalty" in plot_search_history(search).get_ylabel()


def test_plot_search_history_uses_given_axes(search):
    fig, ax = plt.subplots()
    assert plot_search_history(search, ax=ax) is ax


def test_plot_search_history_needs_history(flow):
    with pytest.raises(ValueError, match="search_history_"):
        plot_search_history(flow)


def test_plot_masks_array():
    masks = np.array([[True, False, True], [False, True, False]])
    ax = plot_masks(masks, feature_names=["a", "b", "c"])
    assert len(ax.get_images()) == 1
    np.testing.assert_array_equal(ax.get_images()[0].get_array(), masks.astype(int))
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    labels = {t.get_text() for t in ax.get_legend().get_texts()}
    assert labels == {"conditioning", "transformed"}


def test_plot_masks_estimator(search, flow):
    for est in (search, flow):
        fig, ax = plt.subplots()
        out = plot_masks(est, ax=ax)
        assert out is ax
        image = ax.get_images()[0]
        assert image.get_array().shape == est.masks_.shape


@pytest.mark.parametrize(
    "bad",
    [np.zeros(3, dtype=bool), np.zeros((2, 2, 2), dtype=bool), np.zeros((0, 3), dtype=bool),
     np.array([[0, 2], [1, 0]])],
)
def test_plot_masks_bad_shape(bad):
    with pytest.raises(ValueError):
        plot_masks(bad)


def test_plot_masks_bad_feature_names():
    with pytest.raises(ValueError, match="feature_names"):
        plot_masks(np.array([[True, False]]), feature_names=["only one"])


def test_plot_masks_unfitted():
    with pytest.raises(NotFittedError):
        plot_masks(CouplingFlow())


@pytest.mark.parametrize("features, k", [((0, 1, 2), 3), ((1, 3), 2), ((0, 1, 2, 9), 3)])
def test_plot_samples(flow, X, features, k):
    fig = plot_samples(flow, X, features=features, n_samples=50)
    assert isinstance(fig, Figure)
    axes = [ax for ax in fig.axes]
    assert len(axes) == k * k
    grid = np.array(axes).reshape(k, k)
    for i in range(k):
        for j in range(k):
            if i == j:
                assert len(grid[i, j].patches) > 0  # histograms
                assert len(grid[i, j].collections) == 0
            else:
                assert len(grid[i, j].collections) == 2  # data and samples


def test_plot_samples_no_valid_feature(flow, X):
    with pytest.raises(ValueError):
        plot_samples(flow, X, features=(10,))


@pytest.mark.parametrize("which", ["search", "flow"])
def test_save_search_plots(which, search, flow, X, tmp_path):
    est = search if which == "search" else flow
    directory = tmp_path / "plots"
    paths = save_search_plots(est, X, directory)
    names = [os.path.basename(p) for p in paths]
    expected = ["masks.png", "samples.png"]
    if which == "search":
        expected = ["search_history.png"] + expected
    assert names == expected
    for path in paths:
        assert os.path.getsize(path) > 0
        with open(path, "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    assert plt.get_fignums() == []  # figures are closed


def test_plot_samples_feature_names(flow, X):
    names = ["a", "b", "c", "d"]
    fig = plot_samples(flow, X, features=(1, 3), feature_names=names)
    grid = np.array(fig.axes).reshape(2, 2)
    assert grid[1, 0].get_xlabel() == "b"
    assert grid[1, 1].get_xlabel() == "d"
    assert grid[0, 0].get_ylabel() == "b"
    with pytest.raises(ValueError, match="feature_names"):
        plot_samples(flow, X, feature_names=["a"])
