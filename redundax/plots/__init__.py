"""Figures the experiments write (matplotlib, Agg backend): one module per experiment."""
