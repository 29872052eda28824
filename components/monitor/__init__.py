"""Monitoring: the payload receiver (`keel-monitor`) that stores KServe's inference CloudEvents as Parquet.

Not a pipeline step: the receiver is a long-running server (components/README.md, "Monitoring")."""
