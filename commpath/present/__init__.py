"""Present layer: DataFrames, plots and path-compliance reports."""
