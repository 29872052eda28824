"""The model registry: versioned bundles in the store (registry), the stage log of approvals and promotions
(stages) and the bundle a predictor loads (bundle). Shared by register, serve, deploy and the CLI."""
