# Cython declarations for sim/simulator.py (used only when setup.py compiles it; plain Python
# ignores this file). Compiled, Simulation is an extension type with these attributes, so the
# event loop reads its state as C fields instead of instance-dict look-ups. Its attributes
# are the ones declared here; its methods cannot be patched on the class.

cdef class Simulation:
    cdef public object workload
    cdef public bint token_gaps
    cdef public object engine_cfg
    cdef public object timing
    cdef public object cluster_cfg
    cdef public bint exact
    cdef public object sla
    cdef public object max_sim_time_ms
    cdef public object progress
    cdef public bint check_invariants
    cdef public object _rng_router
    cdef public object metrics
    cdef public object router
    cdef public object router_mode
    cdef public bint _kv_events
    cdef public bint _grouped
    cdef public list heap
    cdef public long long _seq
    cdef public double now
    cdef public list workers
    cdef public object _active
    cdef public list _dirty
    cdef public long long num_arrived
    cdef public long long arrived_input_tokens
    cdef public long long arrived_output_tokens
    cdef public long long num_unroutable
    cdef public list replicas
    cdef public dict pool_replicas
    cdef public object _arrivals
    cdef public object _pending_arrival
    cdef public bint _done
    cdef public bint cut_off
    cdef public bint hold_arrivals
    cdef public object held_arrival
    cdef public double _last_t
    cdef public object disagg
    cdef public bint disaggregated
    cdef public object decode_router
    cdef public object _decode_active
    cdef public dict _handoffs
    cdef public dict _orig
    cdef public list _held
    cdef public bint _reuse_dst
