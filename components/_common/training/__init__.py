"""Fitting a tabular estimator on engineered features: the estimator catalogue (estimators) and the fit itself
(fit), shared by the train stage and the tune stage's trials, so a trial trains exactly what train would."""
