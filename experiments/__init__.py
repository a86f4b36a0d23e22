"""Reports across runs: the sweep's table, plots and markdown from MLflow (`python -m experiments.report`), per-run inspection pages."""
