"""The backtest job: candle store, SMA trend engine, metrics and CLI (no Airflow import)."""

__version__ = "0.1.0"
