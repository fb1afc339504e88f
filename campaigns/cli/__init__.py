"""The ``wa-campaigns`` command line (click).

``main`` holds the root group and registers the features; ``output`` is the one place that
prints (``--json``, refusals, exit codes, progress, live views); each other module is one
feature's commands: ``campaigns``, ``uploads``, ``admin``, ``tokens``, ``ops``.
"""
