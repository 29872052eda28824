"""Kubeflow Pipelines on a cluster: compiling to IR, the client connection, submitting and scheduling runs."""
