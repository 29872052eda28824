"""Running pipelines on this machine: the kfp.local runner, warm start, the docker runner, the
local hyperparameter search (`keel tune`) and re-runs of a registered model (`keel reproduce`)."""
