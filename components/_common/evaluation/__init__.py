"""Scoring and metrics shared by the evaluate stages, fairness, tune's trials and train's own scores: the metric
definitions and gate (metrics, vision_metrics), scoring a tabular Pipeline (scoring), plots and the verdict block."""
