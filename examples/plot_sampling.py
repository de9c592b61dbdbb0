"""
Sampling from a fitted flow
===========================

A normalizing flow is a generative model: ``sample`` draws standard normal
noise and maps it through the inverse of the fitted flow and of its internal
normalization, so the samples are in the original feature space.

This example fits a :class:`~skflowsearch.CouplingFlow` on the 30 features of
the breast cancer data set, draws as many samples as there are held-out rows,
and compares the two with a pair plot and a few summary statistics.
"""

# %%
# Fit
# ---
import matplotlib.pyplot as plt
import numpy as np
from scipy.stats import skew
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split

from skflowsearch import CouplingFlow
from skflowsearch.plotting import plot_samples

data = load_breast_cancer()
X_train, X_test = train_test_split(data.data, test_size=0.3, random_state=0)
flow = CouplingFlow(
    n_layers=4, hidden_layer_sizes=(64, 64), max_epochs=100, n_iter_no_change=25,
    validation_fraction=0.2, random_state=0,
).fit(X_train)
print(f"held-out log-likelihood: {flow.score(X_test):.2f} nats per row "
      f"(weights of epoch {flow.best_epoch_} of {flow.n_epochs_})")

# %%
# Draw samples
# ------------
# The same ``random_state`` gives the same samples.
samples = flow.sample(len(X_test), random_state=0)
assert np.allclose(samples, flow.sample(len(X_test), random_state=0))
print("samples:", samples.shape)

# %%
# Compare a few features: a texture measure, and two measures of the tumour's
# area, which are right-skewed (a long tail of large tumours). A Gaussian
# would have zero skewness. The untrained flow is the Gaussian of its
# (whitened) training rows, and its samples become skewed only as far as
# training moves it away from that Gaussian: how far is decided by early
# stopping, whose epoch is printed above. With 30 features and about 250
# training rows, it often stops after a few epochs, and the samples then keep
# the data's means and correlations but little of their skewness.
features = [1, 3, 13]  # mean texture, mean area, area error
names = data.feature_names
print(f"{'feature':<14}{'data mean':>11}{'sample mean':>13}{'data std':>10}"
      f"{'sample std':>12}{'data skew':>11}{'sample skew':>13}")
for f in features:
    print(f"{names[f]:<14}{X_test[:, f].mean():>11.1f}{samples[:, f].mean():>13.1f}"
          f"{X_test[:, f].std():>10.1f}{samples[:, f].std():>12.1f}"
          f"{skew(X_test[:, f]):>11.2f}{skew(samples[:, f]):>13.2f}")

print("correlations (data):\n", np.round(np.corrcoef(X_test[:, features], rowvar=False), 2))
print("correlations (samples):\n", np.round(np.corrcoef(samples[:, features], rowvar=False), 2))

# %%
# The flow's support is the whole space: nothing stops it from putting a
# little mass on negative areas, which no tumour has. A transform that maps
# the data to an unbounded space before fitting (e.g. a logarithm) avoids
# that.
print(f"samples with a negative mean area: {np.mean(samples[:, 3] < 0):.1%}")

# %%
# Pair plot
# ---------
# Histograms on the diagonal, scatter plots elsewhere: the held-out rows in
# blue, the flow's samples in orange.
fig = plot_samples(flow, X_test, features=features, random_state=0, feature_names=names)
plt.show()
