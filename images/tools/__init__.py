"""Tooling that builds, inspects and pushes Keel's container images (`make images`)."""
