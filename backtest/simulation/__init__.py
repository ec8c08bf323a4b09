"""Simulation: the shared execution engine (positions, fills, equity), the metrics, and the
walk-forward's folds and selection.

May import `backtest.strategies`, `backtest.data`, `backtest.errors` and `backtest.params`; never the job or the CLI.
"""
