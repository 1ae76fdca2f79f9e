# Cython declarations for sim/simulator.py (used only when setup.py compiles it; plain Python
# ignores this file). Compiled, Simulation is an extension type with these attributes, so the
# event loop reads its state as C fields instead of instance-dict look-ups. Its attributes
# are the ones declared here; its methods cannot be patched on the class.

cimport cython
from sim.engines.base cimport EngineBase

# A worker (one DP rank): typed fields, so the event loop reads its engine (as the engine
# extension type: its fields are C fields too) and pass version without dict look-ups.
cdef class Worker:
    cdef public EngineBase engine
    cdef public object state
    cdef public double created_ms
    cdef public object ready_ms
    cdef public object removed_ms
    cdef public long long version
    cdef public object role
    cdef public long pool_index
    cdef public list pending
    cdef public list transferred
    cdef public list releases
    cdef public long kv_waits
    cdef public long dp_rank

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
    cdef public long long _reservations
    cdef public dict _capacity_gen
    cdef public bint _reuse_dst

    # The event loop and the per-event paths with their workers and engines typed (C field
    # reads; C calls between these methods, no Python method look-up).
    @cython.locals(w=Worker, eng=EngineBase)
    cpdef bint run_until(self, object t_stop=*) except -1
    @cython.locals(w=Worker, x=Worker, eng=EngineBase)
    cpdef _route(self, object req)
    @cython.locals(eng=EngineBase)
    cpdef _enqueue(self, Worker w, object req, object keys)
    @cython.locals(eng=EngineBase)
    cpdef _cut_stretch(self, Worker w)
    @cython.locals(eng=EngineBase)
    cpdef _start(self, Worker w)
    cpdef _push(self, object t, object kind, object payload)
