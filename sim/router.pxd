# Cython declarations for sim/router.py (used only when setup.py compiles it; plain Python
# ignores this file). Compiled, Router and KvRouter are extension types: the KV router's
# per-request hooks (select, on_routed, on_first_token, on_finished) read its tables as C
# fields and call the dicts' C API instead of an instance-dict and a method look-up each.
# Their attributes are the ones declared here (the other routers, Python subclasses, keep
# an instance dict); their methods cannot be patched on the class.

cimport cython

cdef class Router:
    cdef public object rng

cdef class KvRouter(Router):
    cdef public object cfg
    cdef public object block_size
    cdef public bint run_keys
    cdef public object _prefix_len
    cdef public dict index
    cdef public dict prefill_tokens
    cdef public dict active
    cdef public dict active_total
    cdef public dict routed
    cdef public object _last
    cdef public object _keys_out

    # The per-worker cost of select in C numbers: token and block counts as integers, the
    # prefill term as a double. Byte-identical to Python's: (pending + isl) / bs is a true
    # division of integers below 2**53 (correctly rounded either way), and an integer
    # added to a double converts exactly.
    @cython.locals(isl=Py_ssize_t, nkeys=Py_ssize_t, ov=Py_ssize_t, ov_active=Py_ssize_t,
                   pending=Py_ssize_t, prefill=double, decode=Py_ssize_t, credit=double,
                   scale=double, bs=Py_ssize_t, track_prefill=bint, track_active=bint,
                   reuse=bint, costs=list, overlaps=list)
    cpdef select(self, object req, object workers, object now)
