"""The generated report: a pure function of the metrics files (tables, CSVs for `dvc plots`, matplotlib figures)."""
