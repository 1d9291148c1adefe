"""Rendering of efficiency records and results directories.

The short efficiency table printed after lm-eval's own tables is on the ground floor
(:mod:`lm_eval_perf.records.console`), with the record's layout every reader here relies on.

* :mod:`.mcr` - MCR of a compressed run against its baseline, from two results JSONs.
* ``process_results.py`` / ``lm-eval-perf report`` (:mod:`.cli`) - a results directory -> paper
  tables, CSV files, plots and a report. Data flows one way:

  :mod:`.collect` (find and read files; unreadable ones become problems) -> :mod:`.identity` (the
  row of a run: model, precision, ratio) -> :mod:`.tasks` (columns and primary metrics of a results
  file; an accuracy column is a task with its evaluation settings) -> :mod:`.study` (cells: of runs
  with the same settings the newest wins; missing cells from batch_eval's matrix plans) ->
  :mod:`.efficiency` (per-row figures, MCR) / :mod:`.compare` (against the baseline) /
  :mod:`.throughput` (sweep points) / :mod:`.esd` (layers) -> :mod:`.tables`, :mod:`.csv_out`,
  :mod:`.plots`, :mod:`.report` -> :mod:`.render` (jinja2 templates in ``templates/``) ->
  :mod:`lm_eval_perf.atomic` (atomic writes).
"""
