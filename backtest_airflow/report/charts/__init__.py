"""The report's charts by kind (matplotlib, Agg, rendered to inline SVG) and the data they draw.

Equity curves come from the (pair, strategy)'s `{symbol}.equity.parquet` in its strategy's
folder, buy-and-hold (close / first close) from the candle store. Only the top and bottom
`CURVES_EACH_END` ranked (pair, strategy) rows get curves, so that rendering stays cheap for 50
pairs; hourly curves are thinned to `MAX_PLOT_POINTS` per line. A grid over two parameters gets
a heatmap of the metric its best combination was chosen by, for the strategy's top
`HEATMAP_PAIRS` pairs (from the run's grid file); several strategies get a comparison of the
ranking metric's spread across pairs; each label's equal-weight portfolio is drawn against the
equal-weight buy-and-hold of its pairs (the curves of `report.portfolio`). A walk-forward's equity
file is its stitched out-of-sample curve: its chart marks the folds' boundaries, and the run gets
a chart of each row's efficiency.

`base` holds what every chart shares (matplotlib, the SVG output, thinning, colours); `curves`
(equity and drawdown per pair), `bars` (returns, efficiency), `heatmaps`, `comparison`
(strategies across pairs) and `portfolio` each draw one kind and import only `base` (and
`formatting`). No Airflow import.
"""
