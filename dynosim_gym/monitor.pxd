# Cython declarations for dynosim_gym/monitor.py (used only when setup.py compiles it; plain
# Python ignores this file): the per-step queue scan reads sequences as C fields.

cimport cython
from sim.engines.base cimport Seq

@cython.locals(s=Seq, qp=long, n_out=long, age=double, arrival=double)
cpdef tuple _scan(object seqs, bint waiting, double now, double timeout, set gone,
                  double oldest, list outcomes)
