# Cython declarations for sim/router.py (used only when setup.py compiles it; plain Python
# ignores this file). Compiled, Router and KvRouter are extension types: the KV router's
# per-request hooks (select, on_routed, on_first_token, on_finished) read its tables as C
# fields and call the dicts' C API instead of an instance-dict and a method look-up each.
# Their attributes are the ones declared here (the other routers, Python subclasses, keep
# an instance dict); their methods cannot be patched on the class.

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
