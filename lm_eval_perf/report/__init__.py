"""Rendering of efficiency records: console tables here; paper tables, plots and reports beside it."""
