"""The ground floor: the vocabulary every part of lm-eval-perf shares, importing nothing above it.

* :mod:`.efficiency` - the efficiency record's typed layout (``config.efficiency`` of lm-eval's results
  JSON), its schema version and JSON Schema (``schema/efficiency-N.json``), validation.
* :mod:`.layout` - a batch's results folder: result and staging folders, ``job.json``, the matrix plan.
* :mod:`.artifacts` - the files plugin tasks write next to the results JSON, and their keys.
* :mod:`.names` - model names and folder slugs; :mod:`.precisions` - precision names.
* :mod:`.console` - number formatting and text tables, and the efficiency table printed after a run.

Writers (``monitor/``, ``models/``, ``tasks/``, ``batch/``) and readers (``report/``) import these
modules; these modules import only :mod:`lm_eval_perf.errors` and :mod:`lm_eval_perf.atomic`.
"""
