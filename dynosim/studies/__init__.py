"""Studies over the simulator, one module per ``dynosim`` subcommand: ``sweeps`` (``dynosim
sweep pareto|interval|cold-start``), ``search`` (``dynosim search``), ``silicon`` (``dynosim
validate silicon``) and ``bench`` (``dynosim bench``). Each builds its runs from
``dynosim simulate``'s options (:func:`dynosim.options.simulate_parser`)."""
