"""Engine flavours: ``base`` (shared mechanics) and one module per scheduler policy
(``vllm``, ``trtllm``, ``sglang``). Build one with :func:`sim.engine.make_engine`."""
