# Cython declarations for dynosim_gym/monitor.py (used only when setup.py compiles it; plain
# Python ignores this file): the per-step queue scan reads sequences as C fields.

cimport cython
from sim.engines.base cimport Seq

@cython.locals(s=Seq, qp=long, n_out=long, age=double, arrival=double)
cpdef tuple _scan(object seqs, bint waiting, double now, double timeout, set gone,
                  double oldest, list outcomes)

# The per-step count of new request records: the columns (array.array) as typed buffers,
# so each record is read without a Python object per field.
@cython.locals(j=Py_ssize_t, i=Py_ssize_t, o=Py_ssize_t, ttft=double, tpot=double,
               completed=Py_ssize_t, met=Py_ssize_t, rejected=Py_ssize_t, reused=Py_ssize_t,
               prompt=Py_ssize_t, ok=bint, ttfts=list, tpots=list, outcomes=list)
cpdef tuple _decided(long long[:] idx, long long[:] st, double[:] arr, double[:] ft,
                     double[:] lt, long long[:] out, long long[:] ru, long long[:] il,
                     Py_ssize_t start, Py_ssize_t stop, set gone, double ttft_sla,
                     double itl_sla, object iv)
