"""The backtest job: what one AWS Batch job runs for a chunk of pairs and one strategy (no Airflow,
no pandas, so a cold container starts fast).

Packages by role, dependencies pointing one way (each package's docstring says what it may import):

    cli  ->  job  ->  simulation  ->  strategies  ->  data  ->  errors, params

- `data/`: candles, the store (Parquet on S3 or a folder), the exchange client, refresh, synthetic candles;
- `strategies/`: the strategy contract, the registry, grids, the built-ins, the look-ahead check;
- `simulation/`: the engine (positions, equity), metrics, walk-forward selection;
- `job.py`: one pair's run from candles to result files; `cli.py`: `python -m backtest`;
- `errors.py` (exit codes), `params.py` (times, symbols, value lists): facts every package shares;
- `strategy.py`: the stable import for strategy authors (`from backtest.strategy import ...`).
"""

__version__ = "0.1.0"
