"""Batch jobs for the campaign platform: config, parquet I/O, Dask execution, MLflow tracking, CLI, synthetic data.

The domain packages (causal_fs, bandits, budget_rl, abtest) never import this package; it imports them.
"""
