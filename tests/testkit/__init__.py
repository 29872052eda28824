"""Keel's test kit: real servers (S3, Postgres, MongoDB, the predictor), stand-ins where none can run,
model inputs made by the real stages, and the system packages each tier needs.

It lives under tests/ so the shipped package holds no test code; pytest puts tests/ on the path
(`pythonpath` in setup.cfg) and the benchmarks run with PYTHONPATH=tests (Makefile).
"""
