# Cython declarations for sim/engines/vllm.py (see sim/engines/base.pxd).

cimport cython
from sim.engines.base cimport EngineBase, Seq

# The stretch's allocation arithmetic (called per stretch and per eviction look-up): C
# integers, Python's floor division and modulo kept (cdivision is off).
@cython.locals(n=long, a=long)
cpdef long _allocations(list phases, long k, long bs)

@cython.locals(a=long, r=long)
cpdef list _phase_prefix(list phases, long bs)

cpdef long _allocations_from_prefix(list pre, long k, long bs)

cdef class _PassState:
    cdef public long budget
    cdef public dict scheduled
    cdef public long n_prefill
    cdef public long isl_sum
    cdef public long prefix_sum
    cdef public bint preempted
    cdef public long pass_id
    cdef public long n_decodes

cdef class _HostReq:
    cdef public long cursor
    cdef public long long store_id
    cdef public bint loading
    cdef public long loaded
    cdef public long g1_tokens
    cdef public long foot
    cdef public bint recorded
    cdef public bint in_conn
    cdef public bint asleep

cdef class VllmEngine(EngineBase):
    cdef public list _phases
    cdef public object _evict_pre
    cdef public long _evict_free0
    cdef public long _evict_k
    cdef public long _evict_published
    cdef public double _evict_next_t
    cdef public object host
    cdef public list connector
    cdef public dict _host_req
    cdef public list _host_obs
    cdef public set _host_retry
    cdef public long long host_hit_requests
    cdef public long long host_reused_tokens
    cdef public long _pass_id
    cdef public long _max_seqs
    cdef public long _max_batched
    cdef public long _num_blocks
    cdef public bint _caching
    cdef public bint _chunked
    cdef public bint _lifo

    # Overrides of EngineBase's cpdef event methods (sim/engines/base.pxd)
    cpdef bint has_work(self) except -1
    cpdef start_pass(self, double now)
    cpdef plan_stretch(self)
    cpdef finish_pass(self, double end)
    cpdef stretch_evictions_until(self, double t)
    cpdef finish_stretch(self, double end)

    # The KV growth of a finished stretch, per running sequence: C integers (k was a
    # Python int, so each sequence's phase arithmetic went through the object API).
    @cython.locals(s=Seq, i=long, a=long, bs=long, total=long, before=long, after=long,
                   caching=bint)
    cpdef _stretch_kv(self, long k)

    # A pass's per-sequence scheduling (arguments were Python ints and bools)
    @cython.locals(bs=long, prev=long, target=long, n_hit=long, fresh=long)
    cpdef bint _allocate(self, Seq s, long upto, long reusable_blocks) except -1

    @cython.locals(bs=long, before=long, plen=long, known=long, pb=long, rem=long, want=long,
                   after=long, reusable=long, used=long, pt=long, vpb=long, v=Seq)
    cpdef long _schedule(self, Seq s, bint from_wait, long cached, _PassState st,
                         double now) except? -3
