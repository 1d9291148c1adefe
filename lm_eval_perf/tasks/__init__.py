"""lm-eval task plugins of this project: YAMLs beside the Python they call.

This folder is indexed by every lm-eval ``TaskManager`` (see :mod:`lm_eval_perf.registration`);
``tasks/`` at the repository root points here, for ``--include_path tasks/`` in a checkout.
"""
