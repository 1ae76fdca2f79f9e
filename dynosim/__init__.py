"""The ``dynosim`` command line and the studies over the :mod:`sim` core.

* :mod:`dynosim.cli`: the ``dynosim`` console script (``simulate``, ``models`` and the
  dispatch to every other subcommand).
* :mod:`dynosim.options`: ``dynosim simulate``'s options, shared by the CLI and the studies.
* :mod:`dynosim.studies`: ``sweep`` (``sweeps``), ``search``, ``validate silicon``
  (``silicon``) and ``bench``.
* :mod:`dynosim.executors` (local process pool or Ray), :mod:`dynosim.plots`,
  :mod:`dynosim.config_schema` (``dynosim config schema``).

The core (:mod:`sim`) never imports this package; ``tests/test_layout.py`` checks it.
"""
