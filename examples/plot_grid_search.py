"""
Tuning the search with GridSearchCV
===================================

The flows are scikit-learn density estimators: their ``score`` method is the
mean log-likelihood of the rows it is given. Model-selection tools use it
when no ``scoring`` is passed, so :class:`~sklearn.model_selection.GridSearchCV`
can choose hyper-parameters of :class:`~skflowsearch.StructureSearchFlow` by
cross-validated held-out log-likelihood, without labels.

Here it compares a few generation budgets and race margins on twelve pixel
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

from skflowsearch import CouplingFlow, StructureSearchFlow
from skflowsearch.datasets import load_dataset

X = load_dataset("digits")[:, 20:32]  # 12 pixels from the middle of the image
X_train, X_test = train_test_split(X, test_size=0.25, random_state=0)
print(f"train: {X_train.shape}, test: {X_test.shape}")

search_flow = StructureSearchFlow(
    n_layers=4,
    hidden_layer_sizes=(16,),
    population_size=4,
    n_offspring=4,
    max_epochs=20,
    random_state=0,
)

# %%
# Grid search
# -----------
# No ``scoring`` argument: each candidate is scored by
# ``StructureSearchFlow.score`` on the held-out fold, the mean log-likelihood
# in nats. ``n_generations=0`` only evaluates the initial population, whose
# best genomes then race the alternating masks at the full budget.
# ``race_margin`` is how many paired standard errors (on race rows that no
# candidate was trained on) a challenger must win by to replace the
# alternating masks; with 0, any gain, however noisy, is enough.
param_grid = {"n_generations": [0, 2], "race_margin": [0.0, 1.0]}
n_splits = 2
grid = GridSearchCV(search_flow, param_grid, cv=KFold(n_splits, shuffle=True, random_state=0))
tic = time.perf_counter()
grid.fit(X_train)
print(f"grid search: {len(grid.cv_results_['params'])} candidates x {n_splits} folds "
      f"in {time.perf_counter() - tic:.1f} s")

# %%
# Results, best first.
order = np.argsort(grid.cv_results_["rank_test_score"], kind="stable")
print(f"{'n_generations':>14}{'race_margin':>12}{'mean log-lik':>14}{'std':>8}{'rank':>6}")
for i in order:
    params = grid.cv_results_["params"][i]
    print(f"{params['n_generations']:>14}{params['race_margin']:>12}"
          f"{grid.cv_results_['mean_test_score'][i]:>14.2f}"
          f"{grid.cv_results_['std_test_score'][i]:>8.2f}"
          f"{grid.cv_results_['rank_test_score'][i]:>6}")

# The same cross-validation of a single Gaussian, for scale, and of the
# CouplingFlow with alternating masks and the same settings: a search whose
# race the alternating masks win is exactly that flow.
gaussian_cv = cross_val_score(GaussianMixture(n_components=1), X_train, cv=grid.cv)
print(f"single Gaussian, same folds: {gaussian_cv.mean():.2f}")
alternating_cv = cross_val_score(
    CouplingFlow(n_layers=4, hidden_layer_sizes=(16,), max_epochs=20, random_state=0),
    X_train, cv=grid.cv,
)
print(f"CouplingFlow (alternating), same folds: {alternating_cv.mean():.2f}")
ties = np.isclose(grid.cv_results_["mean_test_score"], alternating_cv.mean(), rtol=0, atol=1e-9)
print(f"candidates scoring exactly as the CouplingFlow: {ties.sum()} of {len(ties)}")

print("best parameters:", grid.best_params_)
print(f"best cross-validated log-likelihood: {grid.best_score_:.2f}")
print(f"refitted best estimator on the test rows: {grid.score(X_test):.2f}")

# %%
# The race of the refitted best estimator (``race_``): one row per entry,
# its mean log-likelihood on the race rows (held out from every training of
# the search), and its paired difference to the alternating masks on those
# rows, with the standard error of that difference.
print(f"{'entry':<13}{'layers':>7}{'hidden':>8}{'params':>8}{'score':>9}{'diff':>8}{'s.e.':>7}  chosen")
for entry in grid.best_estimator_.race_:
    print(f"{entry['entry']:<13}{entry['n_layers']:>7}{str(entry['hidden_layer_sizes']):>8}"
          f"{entry['n_parameters']:>8}{entry['score']:>9.3f}{entry['difference']:>8.3f}"
          f"{entry['standard_error']:>7.3f}  {'*' if entry['chosen'] else ''}")

# %%
# With these small budgets every candidate beats the Gaussian, and the
# candidates differ from each other by much less than the folds do. Where the
# race keeps the alternating masks, a candidate *is* the CouplingFlow, to the
# last digit. A zero margin lets noisy gains on the race rows through, and
# they need not hold on the held-out fold. A grid like this one
# is how to find out, on your data, whether a longer search (or a looser
# margin) is worth its cost.

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
    labels.append(f"gen={params['n_generations']}\nmargin={params['race_margin']}")
ax.set_xticks(range(len(labels)))
ax.set_xticklabels(labels)
ax.set_ylabel("held-out log-likelihood per row")
ax.set_title("GridSearchCV over StructureSearchFlow")
fig.tight_layout()
plt.show()
