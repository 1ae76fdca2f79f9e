# Cython declarations for sim/engine.py (used only when setup.py compiles it; plain Python
# ignores this file). Typed sequence state turns the engine's per-sequence loops into C
# field accesses; Python code elsewhere sees the same attributes.

cdef class Seq:
    cdef public object req
    cdef public long prompt_len
    cdef public long max_out
    cdef public object keys
    cdef public long generated
    cdef public long computed
    cdef public object blocks
    cdef public long reused
    cdef public double first_admit
    cdef public double first_token
    cdef public double second_token
    cdef public double last_token
    cdef public long preemptions
    cdef public bint admitted
    cdef public object gaps

cdef class _PassState:
    cdef public long budget
    cdef public dict scheduled
    cdef public long n_prefill
    cdef public long isl_sum
    cdef public long prefix_sum
    cdef public bint preempted
