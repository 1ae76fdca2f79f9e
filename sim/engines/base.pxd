# Cython declarations for sim/engines/base.py (used only when setup.py compiles it; plain
# Python ignores this file). Typed sequence and engine state turn the engine's loops and
# attribute look-ups into C field accesses; Python code elsewhere sees the same attributes.
# Compiled, EngineBase is an extension type: its attributes are the ones declared here (a
# flavour declares its own in its .pxd, or is a Python subclass with an instance dict), and
# its methods cannot be patched on the class (tests count stretches with num_stretches).

cdef class Seq:
    cdef public object req
    cdef public long long index
    cdef public double arrival_ms
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
    cdef public long sched_pass

# Per-pass metric sums (C fields: every pass end adds to them)
cdef class FpmTotals:
    cdef public long long passes
    cdef public double busy_ms
    cdef public long long prefill_tokens
    cdef public long long prefill_seqs
    cdef public long long decode_tokens
    cdef public long long decode_kv_tokens

cdef class EngineBase:
    cdef public object id
    cdef public bint defer_gaps
    cdef public bint token_gaps
    cdef public object cfg
    cdef public object timing
    cdef public object metrics
    cdef public bint exact
    cdef public long bs
    cdef public long capacity_tokens
    cdef public object _native_ends
    cdef public object kv
    cdef public object waiting
    cdef public list running
    cdef public bint busy
    cdef public double pass_start
    cdef public double pass_end
    cdef public object stretch_ends
    cdef public list _ready
    cdef public list _rejected
    cdef public bint _did_work
    cdef public long _stretch_ctx0
    cdef public long num_passes
    cdef public long num_preemptions
    cdef public long num_stretches
    cdef public long num_stretch_cuts
    cdef public long num_stretch_passes
    cdef public long fpm_prefill_tokens
    cdef public long fpm_prefill_seqs
    cdef public long fpm_decode_seqs
    cdef public long fpm_decode_kv_tokens
    cdef public long waiting_tokens
    cdef public long fpm_queued_tokens
    cdef public long last_fpm_decode_kv
    cdef public long last_fpm_queued
    cdef public FpmTotals tot
    cdef public object on_first_token
    cdef public object on_finished
    cdef public object on_handoff
    cdef public bint dest_pending
    cdef public bint decode_role

    # The methods the event loop (sim/simulator.py) calls at every event: cpdef, so a call
    # through a typed engine is a C call (a Python subclass's override still takes over).
    # Arguments as the annotations already typed them (float -> double); results objects.
    cpdef bint has_work(self) except -1
    cpdef add_request(self, object req, object keys=*)
    cpdef start_pass(self, double now)
    cpdef plan_stretch(self)
    cpdef finish_pass(self, double end)
    cpdef truncate_stretch(self, double t)
    cpdef stretch_evictions_until(self, double t)
    cpdef finish_stretch(self, double end)
