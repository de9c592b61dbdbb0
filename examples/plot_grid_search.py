"""
Tuning the search with GridSearchCV
===================================

The flows are scikit-learn density estimators: their ``score`` method is the
mean log-likelihood of the rows it is given. Model-selection tools use it
when no ``scoring`` is passed, so :class:`~sklearn.model_selection.GridSearchCV`
can choose hyper-parameters of :class:`~skflowsearch.StructureSearchFlow` by
cross-validated held-out log-likelihood, without labels.

Here it compares a few generation budgets and mutation rates on twelve pixel
intensities of the digits data set (1797 rows). The pixels are integers from
0 to 16; :func:`skflowsearch.datasets.load_dataset` adds uniform noise on
[0, 1) to them (dequantization), so that they have a density.
"""

# %%
# Data and estimator
# ------------------
import time

import matplotlib.pyplot as plt
import numpy as np
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score, train_test_split

from skflowsearch import StructureSearchFlow
from skflowsearch.datasets import load_dataset

X = load_dataset("digits")[:, 20:32]  # 12 pixels from the middle of the image
X_train, X_test = train_test_split(X, test_size=0.25, random_state=0)
print(f"train: {X_train.shape}, test: {X_test.shape}")

search_flow = StructureSearchFlow(
    n_layers=4,
    hidden_layer_sizes=(16,),
    population_size=4,
    n_offspring=4,
    fitness_epochs=5,
    max_epochs=20,
    random_state=0,
)

# %%
# Grid search
# -----------
# No ``scoring`` argument: each candidate is scored by
# ``StructureSearchFlow.score`` on the held-out fold, the mean log-likelihood
# in nats. ``n_generations=0`` only evaluates the initial population
# (alternating masks, their complement and random halves).
param_grid = {"n_generations": [0, 2], "mutation_rate": [0.05, 0.3]}
n_splits = 2
grid = GridSearchCV(search_flow, param_grid, cv=KFold(n_splits, shuffle=True, random_state=0))
tic = time.perf_counter()
grid.fit(X_train)
print(f"grid search: {len(grid.cv_results_['params'])} candidates x {n_splits} folds "
      f"in {time.perf_counter() - tic:.1f} s")

# %%
# Results, best first. With ``n_generations=0`` the mutation rate is unused,
# so those two rows differ only through randomness that the seed fixes.
order = np.argsort(grid.cv_results_["rank_test_score"], kind="stable")
print(f"{'n_generations':>14}{'mutation_rate':>15}{'mean log-lik':>14}{'std':>8}{'rank':>6}")
for i in order:
    params = grid.cv_results_["params"][i]
    print(f"{params['n_generations']:>14}{params['mutation_rate']:>15}"
          f"{grid.cv_results_['mean_test_score'][i]:>14.2f}"
          f"{grid.cv_results_['std_test_score'][i]:>8.2f}"
          f"{grid.cv_results_['rank_test_score'][i]:>6}")

# The same cross-validation of a single Gaussian, for scale.
gaussian_cv = cross_val_score(GaussianMixture(n_components=1), X_train, cv=grid.cv)
print(f"single Gaussian, same folds: {gaussian_cv.mean():.2f}")

print("best parameters:", grid.best_params_)
print(f"best cross-validated log-likelihood: {grid.best_score_:.2f}")
print(f"refitted best estimator on the test rows: {grid.score(X_test):.2f}")

# %%
# With these small budgets all candidates beat the Gaussian, and differ from
# each other by much less than the folds do: a few generations of search do
# not buy much on twelve features. Such a grid is how to find out, on your
# data, whether a longer search is worth its cost.

# %%
# Fold scores
# -----------
# The spread between folds shows how much of the differences between
# candidates is noise.
fig, ax = plt.subplots(figsize=(6, 4))
labels = []
for k, params in enumerate(grid.cv_results_["params"]):
    fold_scores = [grid.cv_results_[f"split{f}_test_score"][k] for f in range(n_splits)]
    ax.plot([k] * n_splits, fold_scores, "o", color="C0", alpha=0.6)
    ax.plot([k], [grid.cv_results_["mean_test_score"][k]], "_", color="C3", markersize=20)
    labels.append(f"gen={params['n_generations']}\nrate={params['mutation_rate']}")
ax.set_xticks(range(len(labels)))
ax.set_xticklabels(labels)
ax.set_ylabel("held-out log-likelihood per row")
ax.set_title("GridSearchCV over StructureSearchFlow")
fig.tight_layout()
plt.show()
