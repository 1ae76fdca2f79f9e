/* Native KV block pool for dynosim: the per-block hot path of small-pool replays.
 *
 * Same semantics and API as the reference implementation ``sim.kv_cache.PyKvCache``
 * (which documents them); tests run both on the same inputs and require identical results.
 *
 * Layout: copies are slots 0..num_blocks-1, one 24-byte record each (key, holders, next
 * copy, LRU links: what one block operation touches, mostly one cache line). A key's resident
 * copies form a chain in registration order (first copy = the one look-ups use), found
 * through an open-addressing hash table (linear probing, backward-shift deletion) of 8-byte
 * entries: the first copy's slot and the low 32 bits of the key's hash (home index and a
 * filter; the key itself is compared in the slot record). Inactive copies are in LRU order,
 * oldest first, in a ring of slot ids: a release appends its copy, a hit that pins an
 * inactive copy only marks the copy as out of the LRU (its ring entry goes stale, skipped
 * later), and evictions take live entries from the front. Unlike a linked list, neither
 * touches another copy's record, and the victims are read in array order (prefetched ahead)
 * instead of by following links. A copy's record holds the ring position of its live entry.
 * When the ring is full it is compacted in place (it holds at least twice the pool, so at
 * least half of it is stale then). Freed slots are a stack, reused before the never-used
 * slots, which are taken in order 0, 1, 2, ...: nothing is initialised up front (the table
 * is calloc'ed, empty = 0), so a pool costs memory only as far as it has been used.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <math.h>

typedef struct {
    int64_t key;
    int32_t refs;           /* holders (set when the slot is taken) */
    int32_t next_copy;      /* next copy of the same key (-1 = none) */
    int64_t lpos;           /* ring position of its LRU entry while refs == 0, else -1 */
} Slot;

typedef struct {
    uint32_t slot1;         /* first copy of the key + 1; 0 = empty entry */
    uint32_t tag;           /* low 32 bits of mix64(key): home index = tag & mask */
} HtEntry;

typedef struct {
    PyObject_HEAD
    int64_t num_blocks, block_size;
    int prefix_caching;
    Slot *s;                /* slot records */
    int32_t *ring;          /* LRU ring: slot ids; position q is ring[q & ring_mask] */
    uint64_t ring_mask;
    int64_t lru_front, lru_back;    /* positions: entries front..back-1 (stale ones too) */
    int64_t lru_len;                /* live entries = inactive copies */
    int32_t *freed;         /* stack of freed slots */
    int64_t freed_n;
    int64_t fresh;          /* slots fresh.. have never been used */
    HtEntry *ht;            /* hash table: key -> first copy slot */
    uint64_t ht_mask;       /* capacity - 1; capacity <= 2^32, so tag & mask is the home */
    int64_t num_private, num_hashed, evictions;
    PyObject *events;       /* KvEvents or None (Python-list events, kept for the API) */
    /* Native event buffer (enable_events): prompt keys stored / removed in the current pass;
       a removal after stores is "late" and remembers how many stores preceded it. */
    int ev_on;
    int64_t *ev_st, *ev_rm, *ev_late_pos;
    int64_t ev_st_n, ev_rm_n, ev_late_n, ev_st_cap, ev_rm_cap, ev_late_cap;
} KvPool;

static int vec_push(int64_t **v, int64_t *n, int64_t *cap, int64_t x) {
    if (*n == *cap) {
        int64_t nc = *cap ? *cap * 2 : 256;
        int64_t *nv = PyMem_Realloc(*v, (size_t)nc * sizeof(int64_t));
        if (!nv) { PyErr_NoMemory(); return -1; }
        *v = nv; *cap = nc;
    }
    (*v)[(*n)++] = x;
    return 0;
}

static inline uint64_t mix64(uint64_t x) {
    x ^= x >> 30; x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27; x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

/* -- open addressing ---------------------------------------------------------- */
/* Backward-shift deletion for linear probing (no tombstones), shared by the pool's table
 * and KeyCounter: empty entry i, then move each later entry of the probe run whose home
 * allows it into the hole. home(e, mask) is an occupied entry's home index, or -1 when the
 * entry is empty; clear(e) empties it. Inlined with the callbacks at each call site. */
static inline void probe_delete(void *table, size_t esz, uint64_t mask, uint64_t i,
                                int64_t (*home)(const void *, uint64_t), void (*clear)(void *)) {
    char *t = table;
    uint64_t j = i;
    for (;;) {
        clear(t + i * esz);
        for (;;) {
            j = (j + 1) & mask;
            int64_t hs = home(t + j * esz, mask);
            if (hs < 0) return;
            uint64_t h = (uint64_t)hs;
            /* can the entry at j move to i? only if i is cyclically in [h, j) */
            if (i <= j ? (h <= i || h > j) : (h <= i && h > j)) break;
        }
        memcpy(t + i * esz, t + j * esz, esz);
        i = j;
    }
}

/* -- hash table ------------------------------------------------------------ */
/* One probe for "find key, or where it would go": the entry index and whether it holds key
 * (register and evict use the index to insert, update or delete without probing again). */
static inline uint64_t ht_probe(KvPool *p, int64_t key, uint32_t *tag_out, int *found) {
    uint64_t h = mix64((uint64_t)key);
    uint32_t tag = (uint32_t)h;
    uint64_t i = h & p->ht_mask;
    *tag_out = tag;
    for (;;) {
        HtEntry e = p->ht[i];
        if (!e.slot1) { *found = 0; return i; }
        if (e.tag == tag && p->s[e.slot1 - 1].key == key) { *found = 1; return i; }
        i = (i + 1) & p->ht_mask;
    }
}

/* First copy of key, or -1. */
static inline int32_t ht_get(KvPool *p, int64_t key) {
    uint32_t tag; int found;
    uint64_t i = ht_probe(p, key, &tag, &found);
    return found ? (int32_t)(p->ht[i].slot1 - 1) : -1;
}

#define PF_AHEAD 16
static inline int get_key(PyObject *obj, int64_t *out);

static int64_t ht_home(const void *e, uint64_t mask) {
    const HtEntry *x = e;
    return x->slot1 ? (int64_t)(x->tag & mask) : -1;
}
static void ht_clear(void *e) { ((HtEntry *)e)->slot1 = 0; }

/* -- LRU ring ------------------------------------------------------------------ */
/* Is the entry at position q live (its copy's current LRU entry)? */
static inline int lru_live(const KvPool *p, int64_t q) {
    return p->s[p->ring[(uint64_t)q & p->ring_mask]].lpos == q;
}

/* Full ring: move the live entries to the front, in order (positions only decrease, so a
 * record's lpos is rewritten to its new position). */
static void lru_compact(KvPool *p) {
    int64_t w = p->lru_front;
    for (int64_t q = p->lru_front; q < p->lru_back; q++) {
        int32_t c = p->ring[(uint64_t)q & p->ring_mask];
        if (p->s[c].lpos != q) continue;
        p->ring[(uint64_t)w & p->ring_mask] = c;
        p->s[c].lpos = w++;
    }
    p->lru_back = w;
}

static inline void lru_push_tail(KvPool *p, int32_t c) {
    if ((uint64_t)(p->lru_back - p->lru_front) > p->ring_mask) lru_compact(p);
    p->ring[(uint64_t)p->lru_back & p->ring_mask] = c;
    p->s[c].lpos = p->lru_back++;
    p->lru_len++;
}

static inline void lru_remove(KvPool *p, int32_t c) {
    p->s[c].lpos = -1;              /* its ring entry is stale now */
    p->lru_len--;
}

/* Oldest inactive copy (lru_len > 0): drops stale entries at the front. */
static inline int32_t lru_oldest(KvPool *p) {
    while (!lru_live(p, p->lru_front)) p->lru_front++;
    return p->ring[(uint64_t)p->lru_front & p->ring_mask];
}

/* -- helpers -------------------------------------------------------------------- */
static int append_long(PyObject *list, long long v) {
    PyObject *o = PyLong_FromLongLong(v);
    if (!o) return -1;
    int r = PyList_Append(list, o);
    Py_DECREF(o);
    return r;
}

/* Keys are 62-bit ints. PyLong_AsLongLong goes through _PyLong_AsByteArray for multi-digit
 * ints (CPython 3.11), which was ~4% of an env step; the AndOverflow variant walks the digits. */
static inline int get_key(PyObject *obj, int64_t *out) {
#if PY_VERSION_HEX < 0x030C0000 && PYLONG_BITS_IN_DIGIT == 30
    /* CPython 3.11's int layout (as Cython reads it): a key is 1-3 30-bit digits, read here
       in a few instructions; anything else (other sizes, subclasses) takes the API below. */
    if (PyLong_CheckExact(obj)) {
        const digit *d = ((PyLongObject *)obj)->ob_digit;
        Py_ssize_t size = Py_SIZE(obj);
        uint64_t u;
        switch (size < 0 ? -size : size) {
        case 0: *out = 0; return 0;
        case 1: u = d[0]; break;
        case 2: u = (uint64_t)d[0] | (uint64_t)d[1] << 30; break;
        case 3:
            if (d[2] >> 3) goto api;             /* 2^63 or more: overflow, raised below */
            u = (uint64_t)d[0] | (uint64_t)d[1] << 30 | (uint64_t)d[2] << 60;
            break;
        default: goto api;
        }
        *out = size < 0 ? -(int64_t)u : (int64_t)u;
        return 0;
    }
api:;
#endif
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (overflow) { PyErr_SetString(PyExc_OverflowError, "block key out of int64 range"); return -1; }
    if (v == -1 && PyErr_Occurred()) return -1;
    *out = (int64_t)v;
    return 0;
}

/* == packed prompt-block keys (sim._kvpool.Keys) ========================================== */
/* A request's full prompt-block keys as one immutable int64 array (one allocation, the keys
 * inline), made once by block_keys and passed router -> engine -> pool -> host tier: the C
 * loops read the keys directly instead of unboxing an int object per key (a pointer chase to
 * a cold object, and an object made and freed per key). It behaves as a read-only sequence
 * of ints (len, indexing, slicing to a Keys, iteration, ``+`` with a Keys or a list of ints,
 * ``==`` with any sequence of ints), so Python code written for the reference's lists
 * (``sim.kv_cache.py_block_keys``) works unchanged; every C function that takes keys takes
 * a Keys or a list (``KeySrc`` below). */
typedef struct {
    PyObject_VAR_HEAD
    int64_t v[1];
} Keys;

static PyTypeObject KeysType;

static Keys *keys_new(Py_ssize_t n) {
    Keys *k = PyObject_NewVar(Keys, &KeysType, n);
    return k;
}

/* The keys a C loop reads: a Keys (packed) or a list of ints (unboxed per key). */
typedef struct { const int64_t *v; PyObject *list; Py_ssize_t n; } KeySrc;

static int keysrc(PyObject *obj, KeySrc *s) {
    if (Py_IS_TYPE(obj, &KeysType)) {
        s->v = ((Keys *)obj)->v; s->list = NULL; s->n = Py_SIZE(obj);
        return 0;
    }
    if (PyList_Check(obj)) {
        s->v = NULL; s->list = obj; s->n = PyList_GET_SIZE(obj);
        return 0;
    }
    PyErr_SetString(PyExc_TypeError, "keys must be a list or Keys");
    return -1;
}

static inline int ks_get(const KeySrc *s, Py_ssize_t i, int64_t *out) {
    if (s->v) { *out = s->v[i]; return 0; }
    return get_key(PyList_GET_ITEM(s->list, i), out);
}

/* The i-th key as an int object (new reference). */
static inline PyObject *ks_item(const KeySrc *s, Py_ssize_t i) {
    if (s->v) return PyLong_FromLongLong(s->v[i]);
    PyObject *o = PyList_GET_ITEM(s->list, i);
    Py_INCREF(o);
    return o;
}

/* Software prefetch for loops over keys (look-ups, pins, counts): each key's table entry is
 * a likely cache miss and the keys are independent, so the entry of the key PF_AHEAD places
 * later is requested before this one is probed. A list item that fails to convert is not
 * prefetched (its error is raised when the loop reaches it). Hints only: results are
 * unchanged. */
static inline void ks_prefetch(const KeySrc *s, Py_ssize_t j, const void *table, size_t esz,
                               uint64_t mask) {
    if (j >= s->n) return;
    int64_t v;
    if (s->v) v = s->v[j];
    else if (get_key(PyList_GET_ITEM(s->list, j), &v) < 0) { PyErr_Clear(); return; }
    __builtin_prefetch((const char *)table + (mix64((uint64_t)v) & mask) * esz);
}

/* Keys from any iterable of ints (the constructor, and ``+`` with a list). */
static Keys *keys_from_iterable(PyObject *it) {
    PyObject *seq = PySequence_Fast(it, "Keys() takes an iterable of ints");
    if (!seq) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    Keys *k = keys_new(n);
    if (k) {
        PyObject **items = PySequence_Fast_ITEMS(seq);
        for (Py_ssize_t i = 0; i < n; i++)
            if (get_key(items[i], &k->v[i]) < 0) { Py_CLEAR(k); break; }
    }
    Py_DECREF(seq);
    return k;
}

static PyObject *Keys_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    PyObject *it = NULL;
    if (kw && PyDict_GET_SIZE(kw)) { PyErr_SetString(PyExc_TypeError, "Keys() takes no keyword arguments"); return NULL; }
    if (!PyArg_ParseTuple(args, "|O:Keys", &it)) return NULL;
    if (!it) return (PyObject *)keys_new(0);
    if (Py_IS_TYPE(it, &KeysType)) { Py_INCREF(it); return it; }
    return (PyObject *)keys_from_iterable(it);
}

static Py_ssize_t Keys_len(Keys *k) { return Py_SIZE(k); }

static PyObject *Keys_item(Keys *k, Py_ssize_t i) {
    if (i < 0 || i >= Py_SIZE(k)) { PyErr_SetString(PyExc_IndexError, "Keys index out of range"); return NULL; }
    return PyLong_FromLongLong(k->v[i]);
}

static PyObject *Keys_subscript(Keys *k, PyObject *item) {
    if (PyIndex_Check(item)) {
        Py_ssize_t i = PyNumber_AsSsize_t(item, PyExc_IndexError);
        if (i == -1 && PyErr_Occurred()) return NULL;
        if (i < 0) i += Py_SIZE(k);
        return Keys_item(k, i);
    }
    if (PySlice_Check(item)) {
        Py_ssize_t start, stop, step;
        if (PySlice_Unpack(item, &start, &stop, &step) < 0) return NULL;
        Py_ssize_t n = PySlice_AdjustIndices(Py_SIZE(k), &start, &stop, step);
        Keys *out = keys_new(n);
        if (!out) return NULL;
        if (step == 1) memcpy(out->v, k->v + start, (size_t)n * sizeof(int64_t));
        else for (Py_ssize_t i = 0; i < n; i++) out->v[i] = k->v[start + i * step];
        return (PyObject *)out;
    }
    PyErr_Format(PyExc_TypeError, "Keys indices must be integers or slices, not %.200s",
                 Py_TYPE(item)->tp_name);
    return NULL;
}

static PyObject *Keys_concat(Keys *a, PyObject *b) {
    Keys *bk;
    if (Py_IS_TYPE(b, &KeysType)) { bk = (Keys *)b; Py_INCREF(bk); }
    else if (PyList_Check(b) || PyTuple_Check(b)) { if (!(bk = keys_from_iterable(b))) return NULL; }
    else {
        PyErr_Format(PyExc_TypeError, "can only concatenate a list of ints or Keys (not \"%.200s\") to Keys",
                     Py_TYPE(b)->tp_name);
        return NULL;
    }
    Keys *out = keys_new(Py_SIZE(a) + Py_SIZE(bk));
    if (out) {
        memcpy(out->v, a->v, (size_t)Py_SIZE(a) * sizeof(int64_t));
        memcpy(out->v + Py_SIZE(a), bk->v, (size_t)Py_SIZE(bk) * sizeof(int64_t));
    }
    Py_DECREF(bk);
    return (PyObject *)out;
}

static PyObject *Keys_richcompare(Keys *a, PyObject *b, int op) {
    if (op != Py_EQ && op != Py_NE) Py_RETURN_NOTIMPLEMENTED;
    int eq;
    if (Py_IS_TYPE(b, &KeysType)) {
        eq = Py_SIZE(a) == Py_SIZE(b) &&
             !memcmp(a->v, ((Keys *)b)->v, (size_t)Py_SIZE(a) * sizeof(int64_t));
    } else if (PyList_Check(b) || PyTuple_Check(b)) {
        Py_ssize_t n = PySequence_Fast_GET_SIZE(b);
        PyObject **items = PySequence_Fast_ITEMS(b);
        eq = n == Py_SIZE(a);
        for (Py_ssize_t i = 0; eq && i < n; i++) {
            PyObject *o = PyLong_FromLongLong(a->v[i]);
            if (!o) return NULL;
            int r = PyObject_RichCompareBool(o, items[i], Py_EQ);
            Py_DECREF(o);
            if (r < 0) return NULL;
            eq = r;
        }
    } else Py_RETURN_NOTIMPLEMENTED;
    return PyBool_FromLong(op == Py_EQ ? eq : !eq);
}

static PyObject *Keys_tolist(Keys *k, PyObject *Py_UNUSED(a)) {
    PyObject *out = PyList_New(Py_SIZE(k));
    if (!out) return NULL;
    for (Py_ssize_t i = 0; i < Py_SIZE(k); i++) {
        PyObject *o = PyLong_FromLongLong(k->v[i]);
        if (!o) { Py_DECREF(out); return NULL; }
        PyList_SET_ITEM(out, i, o);
    }
    return out;
}

static PyObject *Keys_reduce(Keys *k, PyObject *Py_UNUSED(a)) {
    PyObject *l = Keys_tolist(k, NULL);
    return l ? Py_BuildValue("(O(N))", (PyObject *)&KeysType, l) : NULL;
}

static PyObject *Keys_repr(Keys *k) {
    PyObject *l = Keys_tolist(k, NULL);
    if (!l) return NULL;
    PyObject *r = PyUnicode_FromFormat("Keys(%R)", l);
    Py_DECREF(l);
    return r;
}

/* Read-only int64 buffer ("q"), e.g. np.frombuffer(keys, np.int64). */
static int Keys_getbuffer(Keys *k, Py_buffer *view, int flags) {
    if (flags & PyBUF_WRITABLE) { PyErr_SetString(PyExc_BufferError, "Keys are read-only"); return -1; }
    view->obj = (PyObject *)k; Py_INCREF(k);
    view->buf = k->v;
    view->len = Py_SIZE(k) * (Py_ssize_t)sizeof(int64_t);
    view->readonly = 1;
    view->itemsize = sizeof(int64_t);
    view->format = (flags & PyBUF_FORMAT) ? "q" : NULL;
    view->ndim = 1;
    view->shape = (flags & PyBUF_ND) ? &((PyVarObject *)k)->ob_size : NULL;
    view->strides = NULL;
    view->suboffsets = NULL;
    view->internal = NULL;
    return 0;
}
static PyBufferProcs Keys_as_buffer = {.bf_getbuffer = (getbufferproc)Keys_getbuffer};

static PyMethodDef Keys_methods[] = {
    {"tolist", (PyCFunction)Keys_tolist, METH_NOARGS, "the keys as a list of ints"},
    {"__reduce__", (PyCFunction)Keys_reduce, METH_NOARGS, "pickle as the list of keys"},
    {NULL}
};
static PySequenceMethods Keys_as_seq = {
    .sq_length = (lenfunc)Keys_len,
    .sq_concat = (binaryfunc)Keys_concat,
    .sq_item = (ssizeargfunc)Keys_item,
};
static PyMappingMethods Keys_as_map = {
    .mp_length = (lenfunc)Keys_len,
    .mp_subscript = (binaryfunc)Keys_subscript,
};
static PyTypeObject KeysType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sim._kvpool.Keys",
    .tp_doc = "Prompt-block keys packed as int64: an immutable sequence of ints (see block_keys).",
    .tp_basicsize = offsetof(Keys, v),
    .tp_itemsize = sizeof(int64_t),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = Keys_new,
    .tp_repr = (reprfunc)Keys_repr,
    .tp_hash = PyObject_HashNotImplemented,
    .tp_richcompare = (richcmpfunc)Keys_richcompare,
    .tp_methods = Keys_methods,
    .tp_as_sequence = &Keys_as_seq,
    .tp_as_mapping = &Keys_as_map,
    .tp_as_buffer = &Keys_as_buffer,
};

/* == sim.kv_cache.private_key in C ====================================================== */
/* private_key(owner, b) = -1 - (hash((owner, b)) & (2**62 - 1)). CPython's tuple hash (an
 * xxHash-style lane mix, unchanged since 3.8) is repeated here for int pairs, so no tuple is
 * built per block; module init checks it against hash() and falls back to building the
 * tuple if they ever differ. */
#define XXPRIME_1 ((uint64_t)11400714785074694791ULL)
#define XXPRIME_2 ((uint64_t)14029467366897019727ULL)
#define XXPRIME_5 ((uint64_t)2870177450012600261ULL)
#define XXROTATE(x) (((x) << 31) | ((x) >> 33))
static int tuple_hash_native = 0;

static inline int64_t private_key_from_hash(Py_hash_t h) {
    return -1 - (int64_t)((uint64_t)h & (((uint64_t)1 << 62) - 1));
}

/* hash((owner, b)) given hash(owner), for 0 <= b < 2**61 - 1 (hash(b) == b). */
static inline Py_hash_t pair_hash(Py_hash_t owner_hash, Py_ssize_t b) {
    uint64_t acc = XXPRIME_5;
    acc += (uint64_t)owner_hash * XXPRIME_2; acc = XXROTATE(acc); acc *= XXPRIME_1;
    acc += (uint64_t)b * XXPRIME_2; acc = XXROTATE(acc); acc *= XXPRIME_1;
    acc += 2 ^ (XXPRIME_5 ^ 3527539ULL);
    if (acc == (uint64_t)-1) return 1546275796;
    return (Py_hash_t)acc;
}

static int private_key_c(PyObject *owner, Py_hash_t owner_hash, Py_ssize_t b, int64_t *out) {
    if (tuple_hash_native && b >= 0) { *out = private_key_from_hash(pair_hash(owner_hash, b)); return 0; }
    PyObject *bo = PyLong_FromSsize_t(b);
    PyObject *tup = bo ? PyTuple_Pack(2, owner, bo) : NULL;
    Py_XDECREF(bo);
    if (!tup) return -1;
    Py_hash_t h = PyObject_Hash(tup);
    Py_DECREF(tup);
    if (h == -1 && PyErr_Occurred()) return -1;
    *out = private_key_from_hash(h);
    return 0;
}

static int check_tuple_hash(void) {
    static const long long owners[] = {0, 1, 7, 123456, 9999999999LL, -5};
    static const Py_ssize_t bs[] = {0, 1, 2, 63, 1000, 123456};
    for (size_t i = 0; i < sizeof owners / sizeof owners[0]; i++)
        for (size_t j = 0; j < sizeof bs / sizeof bs[0]; j++) {
            PyObject *t = Py_BuildValue("(Ln)", owners[i], bs[j]);
            if (!t) return -1;
            Py_hash_t h = PyObject_Hash(t);
            PyObject *o = PyTuple_GET_ITEM(t, 0);
            Py_hash_t ho = PyObject_Hash(o);
            Py_DECREF(t);
            if (h == -1 || ho == -1) return -1;
            if (pair_hash(ho, bs[j]) != h) return 0;
        }
    return 1;
}

/* == a sequence's block table ============================================================ */
/* The copy ids a sequence holds (-1 = private, unhashed), as an int32 array instead of a list
 * of Python ints: reserve_into/register_range/release read and write it without creating an
 * int object per block. sim.kv_cache.BlockList is the reference pool's twin (a list). */
typedef struct {
    PyObject_HEAD
    int32_t *v;
    Py_ssize_t n, cap;
} Blocks;

static PyTypeObject BlocksType;

static int blocks_grow(Blocks *b, Py_ssize_t need) {
    if (need <= b->cap) return 0;
    Py_ssize_t nc = b->cap ? b->cap * 2 : 16;
    while (nc < need) nc *= 2;
    int32_t *nv = PyMem_Realloc(b->v, (size_t)nc * sizeof(int32_t));
    if (!nv) { PyErr_NoMemory(); return -1; }
    b->v = nv; b->cap = nc;
    return 0;
}

static void Blocks_dealloc(Blocks *b) {
    PyMem_Free(b->v);
    Py_TYPE(b)->tp_free((PyObject *)b);
}

static int Blocks_init(Blocks *b, PyObject *args, PyObject *kw) {
    PyObject *init = NULL;
    if (!PyArg_ParseTuple(args, "|O", &init)) return -1;
    b->n = 0;
    if (init) {
        PyObject *seq = PySequence_Fast(init, "Blocks() takes a sequence of ints");
        if (!seq) return -1;
        Py_ssize_t m = PySequence_Fast_GET_SIZE(seq);
        if (blocks_grow(b, m) < 0) { Py_DECREF(seq); return -1; }
        for (Py_ssize_t i = 0; i < m; i++) {
            long c = PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, i));
            if (c == -1 && PyErr_Occurred()) { Py_DECREF(seq); return -1; }
            if (c < -1 || c > INT32_MAX) {
                Py_DECREF(seq); PyErr_SetString(PyExc_ValueError, "block id out of range"); return -1;
            }
            b->v[b->n++] = (int32_t)c;
        }
        Py_DECREF(seq);
    }
    return 0;
}

static Py_ssize_t Blocks_len(Blocks *b) { return b->n; }

static PyObject *Blocks_item(Blocks *b, Py_ssize_t i) {
    if (i < 0 || i >= b->n) { PyErr_SetString(PyExc_IndexError, "block index out of range"); return NULL; }
    return PyLong_FromLong(b->v[i]);
}

static PyObject *Blocks_add_private(Blocks *b, PyObject *arg) {
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    if (n == -1 && PyErr_Occurred()) return NULL;
    if (n < 0) { PyErr_SetString(PyExc_ValueError, "negative block count"); return NULL; }
    if (blocks_grow(b, b->n + n) < 0) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) b->v[b->n++] = -1;
    Py_RETURN_NONE;
}

static PyObject *Blocks_clear(Blocks *b, PyObject *Py_UNUSED(a)) { b->n = 0; Py_RETURN_NONE; }

static PyObject *Blocks_tolist(Blocks *b, PyObject *Py_UNUSED(a)) {
    PyObject *out = PyList_New(b->n);
    if (!out) return NULL;
    for (Py_ssize_t i = 0; i < b->n; i++) {
        PyObject *o = PyLong_FromLong(b->v[i]);
        if (!o) { Py_DECREF(out); return NULL; }
        PyList_SET_ITEM(out, i, o);
    }
    return out;
}

static PyObject *Blocks_repr(Blocks *b) {
    PyObject *l = Blocks_tolist(b, NULL);
    if (!l) return NULL;
    PyObject *r = PyUnicode_FromFormat("Blocks(%R)", l);
    Py_DECREF(l);
    return r;
}

static PyMethodDef Blocks_methods[] = {
    {"add_private", (PyCFunction)Blocks_add_private, METH_O, "append n private (unhashed) blocks"},
    {"clear", (PyCFunction)Blocks_clear, METH_NOARGS, "hold nothing (after the pool released them)"},
    {"tolist", (PyCFunction)Blocks_tolist, METH_NOARGS, "copy ids as a list (-1 = private)"},
    {NULL}
};
static PySequenceMethods Blocks_as_seq = {
    .sq_length = (lenfunc)Blocks_len, .sq_item = (ssizeargfunc)Blocks_item,
};
static PyTypeObject BlocksType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sim._kvpool.Blocks",
    .tp_doc = "A sequence's held blocks: copy ids, -1 for private (see sim.kv_cache.BlockList).",
    .tp_basicsize = sizeof(Blocks),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Blocks_init,
    .tp_dealloc = (destructor)Blocks_dealloc,
    .tp_repr = (reprfunc)Blocks_repr,
    .tp_methods = Blocks_methods,
    .tp_as_sequence = &Blocks_as_seq,
};

/* Evict the n oldest inactive copies (caller checked there are enough). */
static int evict(KvPool *p, int64_t n) {
    PyObject *removed = NULL, *stored = NULL, *late = NULL;
    if (p->events != Py_None) {
        removed = PyObject_GetAttrString(p->events, "removed");
        stored = PyObject_GetAttrString(p->events, "stored");
        late = PyObject_GetAttrString(p->events, "late");
        if (!removed || !stored || !late) goto fail;
    }
    /* Victims are read in ring order, so they are prefetched in two stages: the records
       of the entries 2 * PF_AHEAD ahead, and the table entries of those PF_AHEAD ahead
       (whose records arrived meanwhile). Stale entries are prefetched too (harmless). */
    int64_t pf_rec = p->lru_front, pf_ht = p->lru_front;
    for (int64_t e = 0; e < n; e++) {
        int32_t c = lru_oldest(p);
        int64_t lim = p->lru_front + (n - e) + 2;
        if (lim > p->lru_back) lim = p->lru_back;
        if (pf_rec < p->lru_front) pf_rec = p->lru_front;
        if (pf_ht < p->lru_front) pf_ht = p->lru_front;
        for (int64_t stop = p->lru_front + 2 * PF_AHEAD; pf_rec < stop && pf_rec < lim; pf_rec++)
            __builtin_prefetch(&p->s[p->ring[(uint64_t)pf_rec & p->ring_mask]]);
        for (int64_t stop = p->lru_front + PF_AHEAD; pf_ht < stop && pf_ht < lim; pf_ht++) {
            int32_t x = p->ring[(uint64_t)pf_ht & p->ring_mask];
            __builtin_prefetch(&p->ht[mix64((uint64_t)p->s[x].key) & p->ht_mask]);
        }
        lru_remove(p, c);
        p->lru_front++;
        int64_t k = p->s[c].key;
        uint32_t tag; int found;
        uint64_t hi = ht_probe(p, k, &tag, &found);
        int32_t first = found ? (int32_t)(p->ht[hi].slot1 - 1) : -1;
        if (first == c) {
            if (p->s[c].next_copy >= 0) {
                p->ht[hi].slot1 = (uint32_t)p->s[c].next_copy + 1;
            } else {
                probe_delete(p->ht, sizeof(HtEntry), p->ht_mask, hi, ht_home, ht_clear);
                if (p->ev_on && k >= 0) {
                    if (p->ev_st_n &&
                        vec_push(&p->ev_late_pos, &p->ev_late_n, &p->ev_late_cap, p->ev_st_n) < 0) goto fail;
                    if (vec_push(&p->ev_rm, &p->ev_rm_n, &p->ev_rm_cap, k) < 0) goto fail;
                }
                if (removed && k >= 0) {
                    Py_ssize_t ns = PyList_GET_SIZE(stored);
                    if (ns) {   /* a removal after stores in this pass: keep its position */
                        PyObject *t = Py_BuildValue("(nL)", ns, (long long)k);
                        if (!t || PyList_Append(late, t) < 0) { Py_XDECREF(t); goto fail; }
                        Py_DECREF(t);
                    }
                    if (append_long(removed, k) < 0) goto fail;
                }
            }
        } else {
            int32_t x = first;
            while (p->s[x].next_copy != c) x = p->s[x].next_copy;
            p->s[x].next_copy = p->s[c].next_copy;
        }
        p->s[c].next_copy = -1;
        p->s[c].refs = -1;
        p->freed[p->freed_n++] = c;
    }
    p->num_hashed -= n;
    p->evictions += n;
    Py_XDECREF(removed); Py_XDECREF(stored); Py_XDECREF(late);
    return 0;
fail:
    Py_XDECREF(removed); Py_XDECREF(stored); Py_XDECREF(late);
    return -1;
}

static inline int has_free_slot(KvPool *p) { return p->freed_n || p->fresh < p->num_blocks; }

/* Register key on a free slot (a private block that filled); returns the slot. */
static int32_t register_key(KvPool *p, int64_t key, PyObject *stored) {
    int32_t c = p->freed_n ? p->freed[--p->freed_n] : (int32_t)p->fresh++;
    Slot *sc = &p->s[c];
    sc->key = key;
    sc->refs = 1;
    sc->next_copy = -1;
    sc->lpos = -1;
    uint32_t tag; int found;
    uint64_t i = ht_probe(p, key, &tag, &found);
    if (found) {
        int32_t x = (int32_t)(p->ht[i].slot1 - 1);
        while (p->s[x].next_copy >= 0) x = p->s[x].next_copy;
        p->s[x].next_copy = c;
    } else {
        p->ht[i].slot1 = (uint32_t)c + 1;
        p->ht[i].tag = tag;
        if (stored && key >= 0 && append_long(stored, key) < 0) return -2;
        if (p->ev_on && key >= 0 && vec_push(&p->ev_st, &p->ev_st_n, &p->ev_st_cap, key) < 0) return -2;
    }
    return c;
}

/* -- methods ---------------------------------------------------------------------- */
static PyObject *KvPool_match_prefix(KvPool *p, PyObject *keys) {
    KeySrc ks;
    if (keysrc(keys, &ks) < 0) return NULL;
    Py_ssize_t n = 0, na = 0;
    if (p->prefix_caching) {
        Py_ssize_t m = ks.n;
        for (Py_ssize_t i = 0; i < PF_AHEAD && i < m; i++)
            ks_prefetch(&ks, i, p->ht, sizeof(HtEntry), p->ht_mask);
        for (Py_ssize_t i = 0; i < m; i++) {
            int64_t k;
            ks_prefetch(&ks, i + PF_AHEAD, p->ht, sizeof(HtEntry), p->ht_mask);
            if (ks_get(&ks, i, &k) < 0) return NULL;
            int32_t c = ht_get(p, k);
            if (c < 0) break;
            n++;
            if (p->s[c].refs > 0) na++;
        }
    }
    return Py_BuildValue("(nn)", n, na);
}

static PyObject *KvPool_resident(KvPool *p, PyObject *key) {
    int64_t k;
    if (get_key(key, &k) < 0) return NULL;
    return PyBool_FromLong(ht_get(p, k) >= 0);
}

/* reserve's work: pin the first copies of hits (their slots to out[0..nh)) and take fresh
 * private blocks, evicting if free space is short. 1 = done, 0 = cannot fit (nothing
 * changed), -1 = error. */
static int reserve_core(KvPool *p, const KeySrc *hits, Py_ssize_t fresh, int32_t *out) {
    Py_ssize_t nh = hits->n;
    int64_t free_now = p->num_blocks - p->num_hashed - p->num_private;
    int64_t shortfall = (int64_t)fresh - free_now;
    if (shortfall > 0) {
        /* the copies found here are the ones pinned below (nothing moves in between) */
        int64_t inactive_hits = 0;
        for (Py_ssize_t i = 0; i < PF_AHEAD && i < nh; i++)
            ks_prefetch(hits, i, p->ht, sizeof(HtEntry), p->ht_mask);
        for (Py_ssize_t i = 0; i < nh; i++) {
            int64_t k;
            ks_prefetch(hits, i + PF_AHEAD, p->ht, sizeof(HtEntry), p->ht_mask);
            if (ks_get(hits, i, &k) < 0) return -1;
            int32_t c = ht_get(p, k);
            if (c < 0) { PyErr_SetString(PyExc_KeyError, "hit key not resident"); return -1; }
            if (p->s[c].refs == 0) inactive_hits++;
            out[i] = c;
        }
        if (shortfall > p->lru_len - inactive_hits) return 0;
        for (Py_ssize_t i = 0; i < nh; i++) {
            int32_t c = out[i];
            if (p->s[c].refs == 0) lru_remove(p, c);
            p->s[c].refs++;
        }
        if (evict(p, shortfall) < 0) return -1;
        p->num_private += fresh;
        return 1;
    }
    for (Py_ssize_t i = 0; i < PF_AHEAD && i < nh; i++)
        ks_prefetch(hits, i, p->ht, sizeof(HtEntry), p->ht_mask);
    for (Py_ssize_t i = 0; i < nh; i++) {
        int64_t k;
        ks_prefetch(hits, i + PF_AHEAD, p->ht, sizeof(HtEntry), p->ht_mask);
        if (ks_get(hits, i, &k) < 0) return -1;
        int32_t c = ht_get(p, k);
        if (c < 0) { PyErr_SetString(PyExc_KeyError, "hit key not resident"); return -1; }
        if (p->s[c].refs == 0) lru_remove(p, c);
        p->s[c].refs++;
        out[i] = c;
    }
    if (shortfall > 0 && evict(p, shortfall) < 0) return -1;
    p->num_private += fresh;
    return 1;
}

static PyObject *KvPool_reserve(KvPool *p, PyObject *args) {
    PyObject *hits; Py_ssize_t fresh; KeySrc ks;
    if (!PyArg_ParseTuple(args, "On", &hits, &fresh) || keysrc(hits, &ks) < 0) return NULL;
    Py_ssize_t nh = ks.n;
    int32_t one, *out = nh > 1 ? PyMem_Malloc((size_t)nh * sizeof(int32_t)) : &one;
    if (!out) return PyErr_NoMemory();
    int r = reserve_core(p, &ks, fresh, out);
    PyObject *ids = NULL;
    if (r == 0) { ids = Py_None; Py_INCREF(ids); }
    else if (r > 0 && (ids = PyList_New(nh))) {
        for (Py_ssize_t i = 0; i < nh; i++) {
            PyObject *o = PyLong_FromLong(out[i]);
            if (!o) { Py_CLEAR(ids); break; }
            PyList_SET_ITEM(ids, i, o);
        }
    }
    if (out != &one) PyMem_Free(out);
    return ids;
}

/* reserve(hits, fresh) appending the pinned copies and then fresh private blocks to a
 * sequence's Blocks; returns whether it fit (False changes nothing). */
static PyObject *KvPool_reserve_into(KvPool *p, PyObject *args) {
    PyObject *blocks, *hits; Py_ssize_t fresh; KeySrc ks;
    if (!PyArg_ParseTuple(args, "O!On", &BlocksType, &blocks, &hits, &fresh) ||
        keysrc(hits, &ks) < 0) return NULL;
    if (fresh < 0) { PyErr_SetString(PyExc_ValueError, "negative block count"); return NULL; }
    Blocks *b = (Blocks *)blocks;
    Py_ssize_t nh = ks.n;
    if (blocks_grow(b, b->n + nh + fresh) < 0) return NULL;
    int r = reserve_core(p, &ks, fresh, b->v + b->n);
    if (r < 0) return NULL;
    if (!r) Py_RETURN_FALSE;
    b->n += nh;
    for (Py_ssize_t i = 0; i < fresh; i++) b->v[b->n++] = -1;
    Py_RETURN_TRUE;
}

static PyObject *KvPool_new_blocks(KvPool *p, PyObject *Py_UNUSED(a)) {
    return PyObject_CallNoArgs((PyObject *)&BlocksType);
}

static PyObject *KvPool_register(KvPool *p, PyObject *key) {
    int64_t k;
    if (get_key(key, &k) < 0) return NULL;
    if (!has_free_slot(p)) { PyErr_SetString(PyExc_RuntimeError, "no free slot"); return NULL; }
    PyObject *stored = NULL;
    if (p->events != Py_None) {
        stored = PyObject_GetAttrString(p->events, "stored");
        if (!stored) return NULL;
    }
    int32_t c = register_key(p, k, stored);
    Py_XDECREF(stored);
    if (c == -2) return NULL;
    p->num_private--;
    p->num_hashed++;
    return PyLong_FromLong(c);
}

static PyObject *KvPool_register_range(KvPool *p, PyObject *args) {
    PyObject *blocks, *keys, *owner; Py_ssize_t start, stop; KeySrc ks;
    if (!PyArg_ParseTuple(args, "OnnOO!", &blocks, &start, &stop, &keys, &PyLong_Type, &owner) ||
        keysrc(keys, &ks) < 0) return NULL;
    Blocks *bt = NULL;
    Py_ssize_t len;
    if (Py_IS_TYPE(blocks, &BlocksType)) { bt = (Blocks *)blocks; len = bt->n; }
    else if (PyList_Check(blocks)) len = PyList_GET_SIZE(blocks);
    else { PyErr_SetString(PyExc_TypeError, "blocks must be Blocks or a list"); return NULL; }
    if (start < 0 || stop > len) { PyErr_SetString(PyExc_IndexError, "block range out of range"); return NULL; }
    Py_hash_t owner_hash = PyObject_Hash(owner);
    if (owner_hash == -1 && PyErr_Occurred()) return NULL;
    PyObject *stored = NULL;
    if (p->events != Py_None) {
        stored = PyObject_GetAttrString(p->events, "stored");
        if (!stored) return NULL;
    }
    Py_ssize_t nk = ks.n, n = 0;
    Py_ssize_t pf_end = stop < nk ? stop : nk;      /* prompt keys: known ahead */
    for (Py_ssize_t b = start; b < start + PF_AHEAD && b < pf_end; b++)
        ks_prefetch(&ks, b, p->ht, sizeof(HtEntry), p->ht_mask);
    for (Py_ssize_t b = start; b < stop; b++) {
        if (b + PF_AHEAD < pf_end)
            ks_prefetch(&ks, b + PF_AHEAD, p->ht, sizeof(HtEntry), p->ht_mask);
        if (bt) {
            if (bt->v[b] != -1) continue;
        } else {
            long cv = PyLong_AsLong(PyList_GET_ITEM(blocks, b));
            if (cv == -1 && PyErr_Occurred()) goto fail;
            if (cv != -1) continue;
        }
        int64_t k;
        if (b < nk) {
            if (ks_get(&ks, b, &k) < 0) goto fail;
        } else if (private_key_c(owner, owner_hash, b, &k) < 0) goto fail;
        if (!has_free_slot(p)) { PyErr_SetString(PyExc_RuntimeError, "no free slot"); goto fail; }
        int32_t c = register_key(p, k, stored);
        if (c == -2) goto fail;
        if (bt) bt->v[b] = c;
        else {
            PyObject *co = PyLong_FromLong(c);
            if (!co) goto fail;
            if (PyList_SetItem(blocks, b, co) < 0) goto fail;   /* steals co */
        }
        n++;
    }
    p->num_private -= n;
    p->num_hashed += n;
    Py_XDECREF(stored);
    Py_RETURN_NONE;
fail:
    p->num_private -= n;
    p->num_hashed += n;
    Py_XDECREF(stored);
    return NULL;
}

static PyObject *KvPool_release(KvPool *p, PyObject *blocks) {
    if (Py_IS_TYPE(blocks, &BlocksType)) {
        Blocks *b = (Blocks *)blocks;
        for (Py_ssize_t i = b->n - 1; i >= 0; i--) {
            int32_t c = b->v[i];
            if (i >= PF_AHEAD && b->v[i - PF_AHEAD] >= 0) __builtin_prefetch(&p->s[b->v[i - PF_AHEAD]]);
            if (c == -1) { p->num_private--; continue; }
            if (--p->s[c].refs == 0) lru_push_tail(p, c);
        }
        Py_RETURN_NONE;
    }
    if (!PyList_Check(blocks)) { PyErr_SetString(PyExc_TypeError, "blocks must be Blocks or a list"); return NULL; }
    for (Py_ssize_t i = PyList_GET_SIZE(blocks) - 1; i >= 0; i--) {
        long c = PyLong_AsLong(PyList_GET_ITEM(blocks, i));
        if (c == -1) {
            if (PyErr_Occurred()) return NULL;
            p->num_private--;
            continue;
        }
        if (--p->s[c].refs == 0) lru_push_tail(p, (int32_t)c);
    }
    Py_RETURN_NONE;
}

static PyObject *KvPool_free_blocks(KvPool *p, PyObject *Py_UNUSED(a)) {
    return PyLong_FromLongLong(p->num_blocks - p->num_hashed - p->num_private);
}

static PyObject *KvPool_inactive_count(KvPool *p, PyObject *Py_UNUSED(a)) {
    return PyLong_FromLongLong(p->lru_len);
}

static PyObject *KvPool_evicted_keys_ahead(KvPool *p, PyObject *args) {
    Py_ssize_t start, stop;
    if (!PyArg_ParseTuple(args, "nn", &start, &stop)) return NULL;
    PyObject *out = PyList_New(0);
    if (!out) return NULL;
    Py_ssize_t i = 0;
    for (int64_t q = p->lru_front; q < p->lru_back && i < stop; q++) {
        if (!lru_live(p, q)) continue;
        int32_t c = p->ring[(uint64_t)q & p->ring_mask];
        if (i++ < start) continue;
        int64_t k = p->s[c].key;
        if (k >= 0 && ht_get(p, k) == c && p->s[c].next_copy < 0 && append_long(out, k) < 0) {
            Py_DECREF(out);
            return NULL;
        }
    }
    return out;
}

static PyObject *KvPool_check(KvPool *p, PyObject *Py_UNUSED(a)) {
    /* used slots: taken once (below fresh) and not on the freed stack */
    char *is_free = PyMem_Calloc(p->fresh ? p->fresh : 1, 1);
    if (!is_free) return PyErr_NoMemory();
    const char *err = NULL;
    for (int64_t f = 0; f < p->freed_n && !err; f++) {
        int32_t c = p->freed[f];
        if (c < 0 || c >= p->fresh || is_free[c]) err = "free list drifted";
        else is_free[c] = 1;
    }
    int64_t used = 0, zero = 0;
    for (int64_t c = 0; c < p->fresh && !err; c++) {
        if (is_free[c]) continue;
        used++;
        if (p->s[c].refs < 0) { err = "negative holders"; break; }
        if (p->s[c].refs == 0) zero++;
        /* reachable from its key's first copy */
        int32_t x = ht_get(p, p->s[c].key);
        while (x >= 0 && x != c) x = p->s[x].next_copy;
        if (x != c) err = "index drifted";
    }
    PyMem_Free(is_free);
    if (err) { PyErr_SetString(PyExc_AssertionError, err); return NULL; }
    if (used != p->num_hashed) {
        PyErr_SetString(PyExc_AssertionError, "copies drifted"); return NULL;
    }
    int64_t n = 0;
    for (int64_t q = p->lru_front; q < p->lru_back; q++) {
        if (!lru_live(p, q)) continue;
        int32_t c = p->ring[(uint64_t)q & p->ring_mask];
        if (c < 0 || c >= p->fresh) { PyErr_SetString(PyExc_AssertionError, "LRU drifted"); return NULL; }
        if (p->s[c].refs != 0) { PyErr_SetString(PyExc_AssertionError, "held block in the LRU"); return NULL; }
        if (++n > used) break;
    }
    if (n != p->lru_len || n != zero) { PyErr_SetString(PyExc_AssertionError, "LRU drifted"); return NULL; }
    if (p->num_private < 0) { PyErr_SetString(PyExc_AssertionError, "negative private count"); return NULL; }
    if (p->num_hashed + p->num_private > p->num_blocks) {
        PyErr_SetString(PyExc_AssertionError, "pool over-committed"); return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *KvPool_get_num_active(KvPool *p, void *Py_UNUSED(c)) {
    return PyLong_FromLongLong(p->num_hashed - p->lru_len + p->num_private);
}
static PyObject *KvPool_get_events(KvPool *p, void *Py_UNUSED(c)) {
    Py_INCREF(p->events); return p->events;
}
static int KvPool_set_events(KvPool *p, PyObject *v, void *Py_UNUSED(c)) {
    if (!v) v = Py_None;
    Py_INCREF(v); Py_SETREF(p->events, v); return 0;
}
static PyObject *KvPool_get_num_private(KvPool *p, void *Py_UNUSED(c)) {
    return PyLong_FromLongLong(p->num_private);
}
static int KvPool_set_num_private(KvPool *p, PyObject *v, void *Py_UNUSED(c)) {
    long long x = PyLong_AsLongLong(v);
    if (x == -1 && PyErr_Occurred()) return -1;
    p->num_private = x; return 0;
}
static PyObject *get_i64(int64_t v) { return PyLong_FromLongLong(v); }
static PyObject *KvPool_get_num_hashed(KvPool *p, void *c) { (void)c; return get_i64(p->num_hashed); }
static PyObject *KvPool_get_evictions(KvPool *p, void *c) { (void)c; return get_i64(p->evictions); }
static PyObject *KvPool_get_num_blocks(KvPool *p, void *c) { (void)c; return get_i64(p->num_blocks); }
static PyObject *KvPool_get_block_size(KvPool *p, void *c) { (void)c; return get_i64(p->block_size); }
static PyObject *KvPool_get_prefix_caching(KvPool *p, void *c) { (void)c; return PyBool_FromLong(p->prefix_caching); }

static void KvPool_dealloc(KvPool *p) {
    PyMem_Free(p->s); PyMem_Free(p->freed); PyMem_Free(p->ht); PyMem_Free(p->ring);
    PyMem_Free(p->ev_st); PyMem_Free(p->ev_rm); PyMem_Free(p->ev_late_pos);
    Py_XDECREF(p->events);
    Py_TYPE(p)->tp_free((PyObject *)p);
}

static int KvPool_init(KvPool *p, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"num_blocks", "block_size", "prefix_caching", NULL};
    long long nb, bs; int pc = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "LL|p", kwlist, &nb, &bs, &pc)) return -1;
    if (nb <= 0 || nb > 0x7fffffff || bs <= 0) {
        PyErr_SetString(PyExc_ValueError, "num_blocks and block_size must be positive"); return -1;
    }
    p->num_blocks = nb; p->block_size = bs; p->prefix_caching = pc;
    uint64_t cap = 16;
    while (cap < (uint64_t)nb * 2) cap <<= 1;
    p->ht_mask = cap - 1;
    /* __init__ may run twice */
    PyMem_Free(p->s); PyMem_Free(p->freed); PyMem_Free(p->ht); PyMem_Free(p->ring);
    /* nothing is written here: slots and the freed stack are filled as used, the table is
       zero (empty) pages until touched */
    p->s = PyMem_Malloc((size_t)nb * sizeof(Slot));
    p->freed = PyMem_Malloc((size_t)nb * sizeof(int32_t));
    p->ht = PyMem_Calloc((size_t)cap, sizeof(HtEntry));
    /* the ring: at least twice the pool (a compaction then frees at least half of it) */
    p->ring = PyMem_Malloc((size_t)cap * sizeof(int32_t));
    p->ring_mask = cap - 1;
    if (!p->s || !p->freed || !p->ht || !p->ring) { PyErr_NoMemory(); return -1; }
    p->freed_n = 0; p->fresh = 0;
    p->lru_front = p->lru_back = 0; p->lru_len = 0;
    p->num_private = p->num_hashed = p->evictions = 0;
    Py_INCREF(Py_None); Py_XSETREF(p->events, Py_None);
    return 0;
}

static PyMethodDef KvPool_methods[] = {
    {"match_prefix", (PyCFunction)KvPool_match_prefix, METH_O, "(leading resident blocks, of which active)"},
    {"resident", (PyCFunction)KvPool_resident, METH_O, "is a copy of key resident"},
    {"reserve", (PyCFunction)KvPool_reserve, METH_VARARGS, "pin hits and take fresh private blocks, atomically"},
    {"reserve_into", (PyCFunction)KvPool_reserve_into, METH_VARARGS, "reserve, appending to a sequence's Blocks"},
    {"new_blocks", (PyCFunction)KvPool_new_blocks, METH_NOARGS, "an empty block table for a sequence"},
    {"register", (PyCFunction)KvPool_register, METH_O, "a private block filled: hash it as key"},
    {"register_range", (PyCFunction)KvPool_register_range, METH_VARARGS, "register private blocks[start:stop]"},
    {"release", (PyCFunction)KvPool_release, METH_O, "drop one hold on each block, last first"},
    {"free_blocks", (PyCFunction)KvPool_free_blocks, METH_NOARGS, "never-used or freed blocks"},
    {"inactive_count", (PyCFunction)KvPool_inactive_count, METH_NOARGS, "inactive (evictable) copies"},
    {"evicted_keys_ahead", (PyCFunction)KvPool_evicted_keys_ahead, METH_VARARGS,
     "keys that evicting LRU positions [start, stop) would remove from the cache"},
    {"check", (PyCFunction)KvPool_check, METH_NOARGS, "assert invariants"},
    {NULL}
};

static PyGetSetDef KvPool_getset[] = {
    {"num_active", (getter)KvPool_get_num_active, NULL, "held blocks", NULL},
    {"events", (getter)KvPool_get_events, (setter)KvPool_set_events, "KvEvents or None", NULL},
    {"num_private", (getter)KvPool_get_num_private, (setter)KvPool_set_num_private, "unhashed held blocks", NULL},
    {"num_hashed", (getter)KvPool_get_num_hashed, NULL, "resident hashed copies", NULL},
    {"evictions", (getter)KvPool_get_evictions, NULL, "copies evicted so far", NULL},
    {"num_blocks", (getter)KvPool_get_num_blocks, NULL, NULL, NULL},
    {"block_size", (getter)KvPool_get_block_size, NULL, NULL, NULL},
    {"prefix_caching", (getter)KvPool_get_prefix_caching, NULL, NULL, NULL},
    {NULL}
};

static PyTypeObject KvPoolType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sim._kvpool.KvPool",
    .tp_doc = "KV block pool with prefix caching (native; see sim.kv_cache.PyKvCache).",
    .tp_basicsize = sizeof(KvPool),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)KvPool_init,
    .tp_dealloc = (destructor)KvPool_dealloc,
    .tp_methods = KvPool_methods,
    .tp_getset = KvPool_getset,
};


/* == block keys ============================================================== */
/* Chain over trace hash ids and per-engine-block keys, returned packed (a Keys);
 * sim.kv_cache.py_block_keys is the pure-Python twin (the same values, as a list). */
#define MIX_A 0x9E3779B97F4A7C15ULL
#define MIX_B 0x632BE59BD9B4E019ULL
#define MASK62 ((1ULL << 62) - 1)

static PyObject *mod_block_keys(PyObject *self, PyObject *args) {
    PyObject *hash_ids; long long tbs, bs, nfull;
    if (!PyArg_ParseTuple(args, "OLLL", &hash_ids, &tbs, &bs, &nfull)) return NULL;
    if (nfull <= 0) return (PyObject *)keys_new(0);
    PyObject *seq = PySequence_Fast(hash_ids, "hash_ids must be a sequence");
    if (!seq) return NULL;
    long long last = (nfull * bs - 1) / tbs;
    Py_ssize_t nh = PySequence_Fast_GET_SIZE(seq);
    if (last >= nh) { Py_DECREF(seq); PyErr_SetString(PyExc_IndexError, "too few hash_ids"); return NULL; }
    uint64_t *chain = PyMem_Malloc((size_t)(last + 1) * sizeof(uint64_t));
    if (!chain) { Py_DECREF(seq); return PyErr_NoMemory(); }
    uint64_t c = 0;
    for (long long i = 0; i <= last; i++) {
        unsigned long long h = PyLong_AsUnsignedLongLongMask(PySequence_Fast_GET_ITEM(seq, i));
        if (h == (unsigned long long)-1 && PyErr_Occurred()) { PyMem_Free(chain); Py_DECREF(seq); return NULL; }
        c = mix64(c ^ ((uint64_t)h * MIX_A + MIX_B));
        chain[i] = c;
    }
    Py_DECREF(seq);
    Keys *out = keys_new((Py_ssize_t)nfull);
    if (!out) { PyMem_Free(chain); return NULL; }
    for (long long b = 0; b < nfull; b++) {
        long long j = ((b + 1) * bs - 1) / tbs;
        out->v[b] = (int64_t)((chain[j] * MIX_A + (uint64_t)b) & MASK62);
    }
    PyMem_Free(chain);
    return (PyObject *)out;
}

/* == counted key multiset (the KV router's active blocks) ========================== */
typedef struct { int64_t key, count; } KcEntry;   /* count 0 = empty entry */

typedef struct {
    PyObject_HEAD
    KcEntry *t;
    uint64_t mask; int64_t size;
} KeyCounter;

static int kc_alloc(KeyCounter *m, uint64_t cap) {
    m->t = PyMem_Calloc(cap, sizeof(KcEntry));
    if (!m->t) { PyErr_NoMemory(); return -1; }
    m->mask = cap - 1;
    return 0;
}

static inline uint64_t kc_find(KeyCounter *m, int64_t k) {
    uint64_t i = mix64((uint64_t)k) & m->mask;
    while (m->t[i].count && m->t[i].key != k) i = (i + 1) & m->mask;
    return i;
}

static int kc_grow(KeyCounter *m) {
    KcEntry *old = m->t; uint64_t ocap = m->mask + 1;
    if (kc_alloc(m, ocap * 2) < 0) { m->t = old; m->mask = ocap - 1; return -1; }
    for (uint64_t i = 0; i < ocap; i++) if (old[i].count) m->t[kc_find(m, old[i].key)] = old[i];
    PyMem_Free(old);
    return 0;
}

static inline void kc_prefetch(KeyCounter *m, int64_t k) {
    __builtin_prefetch(&m->t[mix64((uint64_t)k) & m->mask]);
}

static int64_t kc_home(const void *e, uint64_t mask) {
    const KcEntry *x = e;
    return x->count ? (int64_t)(mix64((uint64_t)x->key) & mask) : -1;
}
static void kc_clear(void *e) { ((KcEntry *)e)->count = 0; }

static void kc_del_at(KeyCounter *m, uint64_t i) {
    probe_delete(m->t, sizeof(KcEntry), m->mask, i, kc_home, kc_clear);
}

static int KeyCounter_init(KeyCounter *m, PyObject *args, PyObject *kw) {
    if (!PyArg_ParseTuple(args, "")) return -1;
    PyMem_Free(m->t);
    m->size = 0;
    return kc_alloc(m, 64);
}

static void KeyCounter_dealloc(KeyCounter *m) {
    PyMem_Free(m->t);
    Py_TYPE(m)->tp_free((PyObject *)m);
}

/* Count each of v[0..n) once more. */
static int kc_add_keys(KeyCounter *m, const int64_t *v, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) {
        if (i + PF_AHEAD < n) kc_prefetch(m, v[i + PF_AHEAD]);
        if ((uint64_t)(m->size + 1) * 2 > m->mask + 1 && kc_grow(m) < 0) return -1;
        uint64_t j = kc_find(m, v[i]);
        if (!m->t[j].count) { m->t[j].key = v[i]; m->size++; }
        m->t[j].count++;
    }
    return 0;
}

/* The keys as a Keys: itself, or a list packed (new reference). */
static PyObject *as_keys(PyObject *keys) {
    if (Py_IS_TYPE(keys, &KeysType)) { Py_INCREF(keys); return keys; }
    if (!PyList_Check(keys)) { PyErr_SetString(PyExc_TypeError, "keys must be a list or Keys"); return NULL; }
    return (PyObject *)keys_from_iterable(keys);
}

static PyObject *KeyCounter_add_all(KeyCounter *m, PyObject *keys) {
    PyObject *packed = as_keys(keys);
    if (!packed) return NULL;
    int r = kc_add_keys(m, ((Keys *)packed)->v, Py_SIZE(packed));
    Py_DECREF(packed);
    if (r < 0) return NULL;
    Py_RETURN_NONE;
}

/* add_all, returning the keys as a Keys for a later remove_all: the KV router removes a
 * request's keys when it finishes (a Keys is returned as is; a list, whose int objects
 * would be cold in cache by then, is packed). */
static PyObject *KeyCounter_add_all_packed(KeyCounter *m, PyObject *keys) {
    PyObject *packed = as_keys(keys);
    if (!packed) return NULL;
    if (kc_add_keys(m, ((Keys *)packed)->v, Py_SIZE(packed)) < 0) { Py_DECREF(packed); return NULL; }
    return packed;
}

static PyObject *KeyCounter_remove_all(KeyCounter *m, PyObject *keys) {
    KeySrc ks;
    if (keysrc(keys, &ks) < 0) return NULL;
    for (Py_ssize_t i = 0; i < PF_AHEAD; i++) ks_prefetch(&ks, i, m->t, sizeof(KcEntry), m->mask);
    for (Py_ssize_t i = 0; i < ks.n; i++) {
        int64_t k;
        ks_prefetch(&ks, i + PF_AHEAD, m->t, sizeof(KcEntry), m->mask);
        if (ks_get(&ks, i, &k) < 0) return NULL;
        uint64_t j = kc_find(m, k);
        if (!m->t[j].count) { PyErr_SetString(PyExc_KeyError, "key not counted"); return NULL; }
        if (--m->t[j].count == 0) { kc_del_at(m, j); m->size--; }
    }
    Py_RETURN_NONE;
}

static int KeyCounter_contains(KeyCounter *m, PyObject *key) {
    int64_t k;
    if (get_key(key, &k) < 0) return -1;
    return m->t[kc_find(m, k)].count != 0;
}

static Py_ssize_t KeyCounter_len(KeyCounter *m) { return (Py_ssize_t)m->size; }

static int kc_insert(KeyCounter *m, int64_t k) {        /* set semantics: count 1 */
    if ((uint64_t)(m->size + 1) * 2 > m->mask + 1 && kc_grow(m) < 0) return -1;
    uint64_t j = kc_find(m, k);
    if (!m->t[j].count) { m->t[j].key = k; m->t[j].count = 1; m->size++; }
    return 0;
}

static void kc_discard(KeyCounter *m, int64_t k) {
    uint64_t j = kc_find(m, k);
    if (m->t[j].count) { kc_del_at(m, j); m->size--; }
}

static PyObject *KeyCounter_update(KeyCounter *m, PyObject *keys) {
    KeySrc ks;
    if (keysrc(keys, &ks) < 0) return NULL;
    for (Py_ssize_t i = 0; i < ks.n; i++) {
        int64_t k;
        if (ks_get(&ks, i, &k) < 0 || kc_insert(m, k) < 0) return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *KeyCounter_difference_update(KeyCounter *m, PyObject *keys) {
    KeySrc ks;
    if (keysrc(keys, &ks) < 0) return NULL;
    for (Py_ssize_t i = 0; i < ks.n; i++) {
        int64_t k;
        if (ks_get(&ks, i, &k) < 0) return NULL;
        kc_discard(m, k);
    }
    Py_RETURN_NONE;
}

static PyMethodDef KeyCounter_methods[] = {
    {"add_all", (PyCFunction)KeyCounter_add_all, METH_O, "count each key once more"},
    {"remove_all", (PyCFunction)KeyCounter_remove_all, METH_O, "count each key once less"},
    {"add_all_packed", (PyCFunction)KeyCounter_add_all_packed, METH_O,
     "add_all, returning the keys as a Keys that remove_all also takes"},
    {"update", (PyCFunction)KeyCounter_update, METH_O, "set semantics: insert keys"},
    {"difference_update", (PyCFunction)KeyCounter_difference_update, METH_O, "set semantics: discard keys"},
    {NULL}
};
static PySequenceMethods KeyCounter_as_seq = {
    .sq_length = (lenfunc)KeyCounter_len, .sq_contains = (objobjproc)KeyCounter_contains,
};
static PyTypeObject KeyCounterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sim._kvpool.KeyCounter",
    .tp_doc = "Multiset of int keys; len() = distinct keys (see sim.router.PyKeyCounter).",
    .tp_basicsize = sizeof(KeyCounter),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)KeyCounter_init,
    .tp_dealloc = (destructor)KeyCounter_dealloc,
    .tp_methods = KeyCounter_methods,
    .tp_as_sequence = &KeyCounter_as_seq,
};

/* == the KV router's published view of one pool (PubIndex) ============================ *
 * A router's index of a worker's cache holds the prompt keys the worker has *published*: its
 * KV events reach the router at each pass end (drain), and a decode stretch publishes its
 * evictions ahead, pass by pass (difference_update). Once drained, that set is exactly the
 * pool's resident prompt keys (keys >= 0 with a copy): a stretch evicts at least the keys it
 * published ahead before its events are drained. So instead of a copy of the pool's key set
 * (one hash-table write per stored and per evicted key, most of them never looked at), the
 * view answers look-ups from the pool itself:
 *   - a key published as removed since the last drain (``rm``) is absent;
 *   - while events are pending (between a pass's start and its drain), a key they touch has
 *     the status it had before the first of them: present if that was a removal, absent if a
 *     store. That map (``ov``) is built from the event buffer only when a look-up needs it;
 *   - otherwise the pool's table decides.
 * A drain just forgets the buffer, ``rm`` and ``ov``. Same answers as a KeyCounter the events
 * are applied to (tests/test_kv_pool_native.py checks it operation by operation against the
 * reference pool's set). One view per pool: it must be the only thing the pool drains into. */
typedef struct { KcEntry *t; uint64_t mask; int64_t size; } KTab;   /* count = value, 0 empty */

static int kt_init(KTab *m) {
    m->t = PyMem_Calloc(64, sizeof(KcEntry));
    if (!m->t) { PyErr_NoMemory(); return -1; }
    m->mask = 63; m->size = 0;
    return 0;
}
static inline uint64_t kt_find(const KTab *m, int64_t k) {
    uint64_t i = mix64((uint64_t)k) & m->mask;
    while (m->t[i].count && m->t[i].key != k) i = (i + 1) & m->mask;
    return i;
}
static inline int64_t kt_get(const KTab *m, int64_t k) { return m->t[kt_find(m, k)].count; }
/* First write wins: insert k with value v unless k is there already. */
static int kt_put(KTab *m, int64_t k, int64_t v) {
    if ((uint64_t)(m->size + 1) * 2 > m->mask + 1) {
        KcEntry *old = m->t; uint64_t ocap = m->mask + 1;
        KcEntry *nt = PyMem_Calloc(ocap * 2, sizeof(KcEntry));
        if (!nt) { PyErr_NoMemory(); return -1; }
        m->t = nt; m->mask = ocap * 2 - 1;
        for (uint64_t i = 0; i < ocap; i++) if (old[i].count) m->t[kt_find(m, old[i].key)] = old[i];
        PyMem_Free(old);
    }
    uint64_t j = kt_find(m, k);
    if (!m->t[j].count) { m->t[j].key = k; m->t[j].count = v; m->size++; }
    return 0;
}
static void kt_clear(KTab *m) {
    if (!m->size) return;
    if (m->mask > 4095) {                 /* a burst grew it: back to small */
        KcEntry *nt = PyMem_Calloc(64, sizeof(KcEntry));
        if (nt) { PyMem_Free(m->t); m->t = nt; m->mask = 63; m->size = 0; return; }
    }
    memset(m->t, 0, (m->mask + 1) * sizeof(KcEntry));
    m->size = 0;
}

#define PUB_PRESENT 1
#define PUB_ABSENT 2

typedef struct {
    PyObject_HEAD
    KvPool *pool;
    KTab rm;                /* published removed ahead since the last drain */
    KTab ov;                /* pending events' keys -> status before the first of them */
    int64_t built_st, built_rm;   /* event counts ov was built from */
} PubIndex;

static PyTypeObject PubIndexType;

static void PubIndex_dealloc(PubIndex *v) {
    PyMem_Free(v->rm.t); PyMem_Free(v->ov.t);
    Py_XDECREF(v->pool);
    Py_TYPE(v)->tp_free((PyObject *)v);
}

static PyObject *pub_new(KvPool *p) {
    PubIndex *v = PyObject_New(PubIndex, &PubIndexType);
    if (!v) return NULL;
    v->rm.t = v->ov.t = NULL;
    Py_INCREF(p); v->pool = p;
    v->built_st = v->built_rm = 0;
    if (kt_init(&v->rm) < 0 || kt_init(&v->ov) < 0) { Py_DECREF(v); return NULL; }
    return (PyObject *)v;
}

/* Bring ov up to date with the pending events (in event order, as a drain applies them). */
static int pub_build(PubIndex *v) {
    KvPool *p = v->pool;
    if (v->built_st == p->ev_st_n && v->built_rm == p->ev_rm_n) return 0;
    kt_clear(&v->ov);
    int64_t early = p->ev_rm_n - p->ev_late_n, done = 0;
    for (int64_t i = 0; i < early; i++) if (kt_put(&v->ov, p->ev_rm[i], PUB_PRESENT) < 0) return -1;
    for (int64_t l = 0; l < p->ev_late_n; l++) {
        for (; done < p->ev_late_pos[l]; done++) if (kt_put(&v->ov, p->ev_st[done], PUB_ABSENT) < 0) return -1;
        if (kt_put(&v->ov, p->ev_rm[early + l], PUB_PRESENT) < 0) return -1;
    }
    for (; done < p->ev_st_n; done++) if (kt_put(&v->ov, p->ev_st[done], PUB_ABSENT) < 0) return -1;
    v->built_st = p->ev_st_n; v->built_rm = p->ev_rm_n;
    return 0;
}

/* Is k published? ``pending``: events are buffered and ov is built. */
static inline int pub_has(PubIndex *v, int64_t k, int pending) {
    if (k < 0) return 0;                              /* private keys are never published */
    if (v->rm.size && kt_get(&v->rm, k)) return 0;
    if (pending) {
        int64_t st = kt_get(&v->ov, k);
        if (st) return st == PUB_PRESENT;
    }
    return ht_get(v->pool, k) >= 0;
}

static int pub_prepare(PubIndex *v) {               /* -1 error, else pending (0/1) */
    KvPool *p = v->pool;
    if (!(p->ev_st_n || p->ev_rm_n)) return 0;
    return pub_build(v) < 0 ? -1 : 1;
}

static int PubIndex_contains(PubIndex *v, PyObject *key) {
    int64_t k;
    if (get_key(key, &k) < 0) return -1;
    int pending = pub_prepare(v);
    if (pending < 0) return -1;
    return pub_has(v, k, pending);
}

static PyObject *PubIndex_difference_update(PubIndex *v, PyObject *keys) {
    KeySrc ks;
    if (keysrc(keys, &ks) < 0) return NULL;
    for (Py_ssize_t i = 0; i < ks.n; i++) {
        int64_t k;
        if (ks_get(&ks, i, &k) < 0) return NULL;
        if (k >= 0 && kt_put(&v->rm, k, 1) < 0) return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *PubIndex_tolist(PubIndex *v, PyObject *Py_UNUSED(a)) {
    /* the published keys, sorted (tests) */
    KvPool *p = v->pool;
    int pending = pub_prepare(v);
    if (pending < 0) return NULL;
    PyObject *out = PyList_New(0);
    if (!out) return NULL;
    for (uint64_t i = 0; i <= p->ht_mask; i++) {      /* resident keys the view keeps */
        if (!p->ht[i].slot1) continue;
        int64_t k = p->s[p->ht[i].slot1 - 1].key;
        if (pub_has(v, k, pending) && append_long(out, k) < 0) { Py_DECREF(out); return NULL; }
    }
    if (pending) {                                    /* keys evicted since, still published */
        for (uint64_t i = 0; i <= v->ov.mask; i++) {
            int64_t k = v->ov.t[i].key;
            if (v->ov.t[i].count == PUB_PRESENT && ht_get(p, k) < 0 && !(v->rm.size && kt_get(&v->rm, k))
                && append_long(out, k) < 0) { Py_DECREF(out); return NULL; }
        }
    }
    if (PyList_Sort(out) < 0) { Py_DECREF(out); return NULL; }
    return out;
}

static PyMethodDef PubIndex_methods[] = {
    {"difference_update", (PyCFunction)PubIndex_difference_update, METH_O,
     "publish removals ahead of the events (a decode stretch's evictions)"},
    {"tolist", (PyCFunction)PubIndex_tolist, METH_NOARGS, "the published keys, sorted"},
    {NULL}
};
static PySequenceMethods PubIndex_as_seq = {.sq_contains = (objobjproc)PubIndex_contains};
static PyTypeObject PubIndexType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sim._kvpool.PubIndex",
    .tp_doc = "A KV router's published view of one KvPool (KvPool.new_index).",
    .tp_basicsize = sizeof(PubIndex),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_dealloc = (destructor)PubIndex_dealloc,
    .tp_methods = PubIndex_methods,
    .tp_as_sequence = &PubIndex_as_seq,
};

/* Pool event API (defined here: needs KeyCounter). */
static PyObject *KvPool_enable_events(PyObject *self, PyObject *Py_UNUSED(a)) {
    ((KvPool *)self)->ev_on = 1; Py_RETURN_NONE;
}
static PyObject *KvPool_has_events(PyObject *self, PyObject *Py_UNUSED(a)) {
    KvPool *p = (KvPool *)self;
    return PyBool_FromLong(p->ev_st_n || p->ev_rm_n);
}
static PyObject *KvPool_new_index(PyObject *self, PyObject *Py_UNUSED(a)) {
    return pub_new((KvPool *)self);       /* the published view (PubIndex above) */
}
/* Apply this pass's events to a router index in event order, then clear them: removals
   that precede every store in bulk, then stores with the late removals at their places. */
static PyObject *KvPool_drain_events_into(PyObject *self, PyObject *index) {
    KvPool *p = (KvPool *)self;
    if (Py_IS_TYPE(index, &PubIndexType)) {      /* the view reads the pool: forget the buffer */
        PubIndex *v = (PubIndex *)index;
        if (v->pool != p) { PyErr_SetString(PyExc_ValueError, "index is another pool's view"); return NULL; }
        kt_clear(&v->rm); kt_clear(&v->ov);
        v->built_st = v->built_rm = 0;
        p->ev_st_n = p->ev_rm_n = p->ev_late_n = 0;
        Py_RETURN_NONE;
    }
    if (!PyObject_TypeCheck(index, &KeyCounterType)) {
        PyErr_SetString(PyExc_TypeError, "index must be a KeyCounter or PubIndex (see new_index)"); return NULL;
    }
    KeyCounter *m = (KeyCounter *)index;
    int64_t early = p->ev_rm_n - p->ev_late_n;
    for (int64_t i = 0; i < early; i++) {
        if (i + PF_AHEAD < early) kc_prefetch(m, p->ev_rm[i + PF_AHEAD]);
        kc_discard(m, p->ev_rm[i]);
    }
    int64_t done = 0;
    for (int64_t l = 0; l < p->ev_late_n; l++) {
        for (; done < p->ev_late_pos[l]; done++) if (kc_insert(m, p->ev_st[done]) < 0) return NULL;
        kc_discard(m, p->ev_rm[early + l]);
    }
    for (; done < p->ev_st_n; done++) {
        if (done + PF_AHEAD < p->ev_st_n) kc_prefetch(m, p->ev_st[done + PF_AHEAD]);
        if (kc_insert(m, p->ev_st[done]) < 0) return NULL;
    }
    p->ev_st_n = p->ev_rm_n = p->ev_late_n = 0;
    Py_RETURN_NONE;
}
static PyObject *KvPool_get_events_enabled(PyObject *self, void *Py_UNUSED(c)) {
    return PyBool_FromLong(((KvPool *)self)->ev_on);
}

static PyMethodDef KvPool_event_methods[] = {
    {"enable_events", KvPool_enable_events, METH_NOARGS, "buffer prompt-key events for a KV router"},
    {"has_events", KvPool_has_events, METH_NOARGS, "any events buffered this pass"},
    {"new_index", KvPool_new_index, METH_NOARGS, "an empty router index this pool can drain into"},
    {"drain_events_into", KvPool_drain_events_into, METH_O, "apply and clear the buffered events"},
    {NULL}
};

static int add_event_methods(void) {
    PyObject *dict = KvPoolType.tp_dict;
    for (PyMethodDef *d = KvPool_event_methods; d->ml_name; d++) {
        PyObject *f = PyDescr_NewMethod(&KvPoolType, d);
        if (!f || PyDict_SetItemString(dict, d->ml_name, f) < 0) { Py_XDECREF(f); return -1; }
        Py_DECREF(f);
    }
    static PyGetSetDef gs = {"events_enabled", (getter)KvPool_get_events_enabled, NULL, "events on", NULL};
    PyObject *g = PyDescr_NewGetSet(&KvPoolType, &gs);
    if (!g || PyDict_SetItemString(dict, "events_enabled", g) < 0) { Py_XDECREF(g); return -1; }
    Py_DECREF(g);
    PyType_Modified(&KvPoolType);
    return 0;
}

/* sim.timing.modeled_ms(ms) with speed-up 1: the duration on the engine's whole-nanosecond
 * clock, same float operations as the Python. A value within 1e-6 of a half nanosecond is
 * rounded by the Python callback to_ns (exact rational rounding). Returns 0 and sets *out, or
 * -1 with a Python error set. */
static int modeled_ms_c(double ms, PyObject *to_ns, double *out) {
    double x = (ms / 1000.0) * 1e9;
    double ns = rint(x);
    double fr = x - floor(x);
    if (fabs(fr - 0.5) < 1e-6) {
        PyObject *r = PyObject_CallFunction(to_ns, "d", ms / 1000.0);
        if (!r) return -1;
        ns = PyLong_AsDouble(r);
        Py_DECREF(r);
        if (ns == -1.0 && PyErr_Occurred()) return -1;
    }
    double sec = floor(ns / 1e9);
    double rem = ns - sec * 1e9;
    *out = (sec + rem / 1e9) * 1000.0;
    return 0;
}

/* == decode stretch of Dynamo's polynomial timing ===================================== */
/* End times of k decode passes from t0, batch context ctx0 + n*j at pass j, as bytes of k
 * doubles. The same float operations in the same order as sim.timing (decode_ms_series ->
 * modeled_ms_array) and np.cumsum, so the values are bit-identical. */
static PyObject *mod_poly_decode_ends(PyObject *self, PyObject *args) {
    double t0, cap; long long ctx0, n, k; PyObject *to_ns;
    if (!PyArg_ParseTuple(args, "dLLLdO", &t0, &ctx0, &n, &k, &cap, &to_ns)) return NULL;
    if (k < 0) { PyErr_SetString(PyExc_ValueError, "k < 0"); return NULL; }
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)k * (Py_ssize_t)sizeof(double));
    if (!out) return NULL;
    double *e = (double *)PyBytes_AS_STRING(out);
    double t = t0;
    for (long long j = 0; j < k; j++) {
        double u = (double)(ctx0 + n * j) / cap;
        if (u > 1.0) u = 1.0;
        double ms = -25.74 * u * u + 54.01 * u + 5.74;
        if (ms < 1.0) ms = 1.0;
        double d;
        if (modeled_ms_c(ms, to_ns, &d) < 0) { Py_DECREF(out); return NULL; }
        t = t + d;
        e[j] = t;
    }
    return out;
}

/* == decode stretch of a GPU table (sim.gpu_timing.GpuTableTiming) ===================== */
/* End times of k decode passes of a batch of n from t0 (context ctx0 + n*j at pass j), as
 * bytes of k doubles. The caller fixes the batch-size interpolation (rows z0, z1 of the
 * residual grid and fraction fx); per pass this repeats raw_decode_ms (linear part times
 * the bilinear residual over context per sequence, clamped at the grid's edges) and
 * modeled_ms, with the same float operations in the same order, so the values equal
 * pass-by-pass stepping bit for bit. Only for decode speed-up 1. */
static PyObject *mod_table_decode_ends(PyObject *self, PyObject *args) {
    double t0, a, b, c, fx; long long ctx0, n, k; PyObject *to_ns;
    const char *nodes_b, *z0_b, *z1_b; Py_ssize_t nodes_len, z0_len, z1_len;
    if (!PyArg_ParseTuple(args, "dLLLddddy#y#y#O", &t0, &ctx0, &n, &k, &a, &b, &c, &fx,
                          &nodes_b, &nodes_len, &z0_b, &z0_len, &z1_b, &z1_len, &to_ns))
        return NULL;
    Py_ssize_t m = nodes_len / (Py_ssize_t)sizeof(double);
    if (k < 0 || n <= 0 || m < 2 || z0_len != nodes_len || z1_len != nodes_len) {
        PyErr_SetString(PyExc_ValueError, "bad decode stretch arguments"); return NULL;
    }
    const double *nodes = (const double *)nodes_b, *z0 = (const double *)z0_b,
                 *z1 = (const double *)z1_b;
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)k * (Py_ssize_t)sizeof(double));
    if (!out) return NULL;
    double *e = (double *)PyBytes_AS_STRING(out);
    double t = t0, B = (double)n, lin0 = a + b * B, gx = 1.0 - fx;
    Py_ssize_t last = m - 1, jj = 0;
    for (long long p = 0; p < k; p++) {
        long long kv = ctx0 + n * p;
        double lin = lin0 + c * (double)kv;
        double x = (double)kv / B, fy;
        Py_ssize_t j;
        if (x <= nodes[0]) { j = 0; fy = 0.0; }
        else if (x >= nodes[last]) { j = last - 1; fy = 1.0; }
        else {
            /* bisect_right - 1; x only grows along a stretch, so walk from the last segment */
            if (jj > last - 1 || nodes[jj] > x) jj = 0;
            while (jj + 1 < last && nodes[jj + 1] <= x) jj++;
            j = jj;
            fy = (x - nodes[j]) / (nodes[j + 1] - nodes[j]);
        }
        double gy = 1.0 - fy;
        double r = (z0[j] * gy + z0[j + 1] * fy) * gx + (z1[j] * gy + z1[j + 1] * fy) * fx;
        double ms = lin * r;
        double d = 0.0;
        if (ms > 0.0 && modeled_ms_c(ms, to_ns, &d) < 0) { Py_DECREF(out); return NULL; }
        t = t + d;
        e[p] = t;
    }
    return out;
}

/* == per-pass times of a GPU table (sim.gpu_timing.GpuTableTiming) ====================== */
/* ``prefill_ms`` and ``decode_ms`` of one pass, called at every full pass: the same float
 * operations in the same order as GpuTableTiming.raw_prefill_ms / raw_decode_ms followed by
 * sim.timing.modeled_ms (speed-up 1 only), so the values are bit-identical; the Python
 * methods stay the reference (tests/test_gpu_timing.py compares them). Built from the
 * table's axes and grids as bytes of doubles. */
typedef struct {
    PyObject_HEAD
    double *pn_log, *pt, *pp, *pms;   /* prefill: log num_seqs, new and cached tokens; ms[k][t][p] */
    Py_ssize_t npn, npt, npp;
    double a, b, c;                   /* decode: linear part */
    double *db, *dc, *dr;             /* decode: batch sizes, context per sequence; residual[b][c] */
    Py_ssize_t ndb, ndc;
    PyObject *to_ns;                  /* sim.timing._to_ns, for near ties */
} TableTiming;

static void TableTiming_dealloc(TableTiming *t) {
    PyMem_Free(t->pn_log); PyMem_Free(t->pt); PyMem_Free(t->pp); PyMem_Free(t->pms);
    PyMem_Free(t->db); PyMem_Free(t->dc); PyMem_Free(t->dr);
    Py_XDECREF(t->to_ns);
    Py_TYPE(t)->tp_free((PyObject *)t);
}

static int tt_copy(double **dst, const char *src, Py_ssize_t len, Py_ssize_t *n) {
    if (len % (Py_ssize_t)sizeof(double)) { PyErr_SetString(PyExc_ValueError, "not doubles"); return -1; }
    PyMem_Free(*dst);
    *dst = PyMem_Malloc(len ? (size_t)len : 1);
    if (!*dst) { PyErr_NoMemory(); return -1; }
    memcpy(*dst, src, (size_t)len);
    *n = len / (Py_ssize_t)sizeof(double);
    return 0;
}

static int TableTiming_init(TableTiming *t, PyObject *args, PyObject *kw) {
    const char *pn, *pt, *pp, *pms, *db, *dc, *dr;
    Py_ssize_t lpn, lpt, lpp, lpms, ldb, ldc, ldr, nms, ndr;
    double a, b, c; PyObject *to_ns;
    if (!PyArg_ParseTuple(args, "y#y#y#y#dddy#y#y#O", &pn, &lpn, &pt, &lpt, &pp, &lpp, &pms, &lpms,
                          &a, &b, &c, &db, &ldb, &dc, &ldc, &dr, &ldr, &to_ns)) return -1;
    if (tt_copy(&t->pn_log, pn, lpn, &t->npn) < 0 || tt_copy(&t->pt, pt, lpt, &t->npt) < 0 ||
        tt_copy(&t->pp, pp, lpp, &t->npp) < 0 || tt_copy(&t->pms, pms, lpms, &nms) < 0 ||
        tt_copy(&t->db, db, ldb, &t->ndb) < 0 || tt_copy(&t->dc, dc, ldc, &t->ndc) < 0 ||
        tt_copy(&t->dr, dr, ldr, &ndr) < 0) return -1;
    if (t->npn < 2 || t->npt < 2 || t->npp < 2 || t->ndb < 2 || t->ndc < 2 ||
        nms != t->npn * t->npt * t->npp || ndr != t->ndb * t->ndc) {
        PyErr_SetString(PyExc_ValueError, "table axes and grids do not match"); return -1;
    }
    t->a = a; t->b = b; t->c = c;
    Py_INCREF(to_ns); Py_XSETREF(t->to_ns, to_ns);
    return 0;
}

/* bisect_right(nodes, x) - 1 */
static inline Py_ssize_t tt_bisect(const double *nodes, Py_ssize_t n, double x) {
    Py_ssize_t lo = 0, hi = n;
    while (lo < hi) { Py_ssize_t mid = (lo + hi) / 2; if (x < nodes[mid]) hi = mid; else lo = mid + 1; }
    return lo - 1;
}
/* sim.gpu_timing._seg: clamped at both ends */
static inline void tt_seg(const double *nodes, Py_ssize_t n, double x, Py_ssize_t *i, double *f) {
    Py_ssize_t last = n - 1;
    if (x <= nodes[0]) { *i = 0; *f = 0.0; return; }
    if (x >= nodes[last]) { *i = last - 1; *f = 1.0; return; }
    *i = tt_bisect(nodes, n, x);
    *f = (x - nodes[*i]) / (nodes[*i + 1] - nodes[*i]);
}
/* sim.gpu_timing._seg_extrap: clamped below, extrapolated above */
static inline void tt_seg_extrap(const double *nodes, Py_ssize_t n, double x, Py_ssize_t *i, double *f) {
    Py_ssize_t last = n - 1;
    if (x <= nodes[0]) { *i = 0; *f = 0.0; return; }
    Py_ssize_t j = tt_bisect(nodes, n, x);
    if (j > last - 1) j = last - 1;
    *i = j;
    *f = (x - nodes[j]) / (nodes[j + 1] - nodes[j]);
}
static inline double tt_plane(const TableTiming *t, Py_ssize_t k, Py_ssize_t it, double ft,
                              Py_ssize_t ip, double fp) {
    const double *r0 = t->pms + (k * t->npt + it) * t->npp, *r1 = r0 + t->npp;
    double lo = r0[ip] * (1.0 - fp) + r0[ip + 1] * fp;
    double hi = r1[ip] * (1.0 - fp) + r1[ip + 1] * fp;
    return lo * (1.0 - ft) + hi * ft;
}

static PyObject *TableTiming_prefill_ms(TableTiming *t, PyObject *args) {
    long long new_tokens, cached, num_seqs;
    if (!PyArg_ParseTuple(args, "LLL", &new_tokens, &cached, &num_seqs)) return NULL;
    if (new_tokens <= 0) return PyFloat_FromDouble(0.0);
    long long n = num_seqs < new_tokens ? num_seqs : new_tokens;
    if (n < 1) n = 1;
    Py_ssize_t it, ip, k; double ft, fp, fk;
    tt_seg_extrap(t->pt, t->npt, (double)new_tokens, &it, &ft);
    tt_seg_extrap(t->pp, t->npp, (double)(cached > 0 ? cached : 0), &ip, &fp);
    tt_seg(t->pn_log, t->npn, log((double)n), &k, &fk);
    double ms = tt_plane(t, k, it, ft, ip, fp);
    if (fk > 0.0) ms = ms * (1.0 - fk) + tt_plane(t, k + 1, it, ft, ip, fp) * fk;
    double out = 0.0;
    if (ms > 0.0 && modeled_ms_c(ms, t->to_ns, &out) < 0) return NULL;
    return PyFloat_FromDouble(out);
}

static PyObject *TableTiming_decode_ms(TableTiming *t, PyObject *args) {
    long long batch, total_kv;
    if (!PyArg_ParseTuple(args, "LL", &batch, &total_kv)) return NULL;
    if (batch <= 0) return PyFloat_FromDouble(0.0);
    double B = (double)batch;
    double lin = (t->a + t->b * B) + t->c * (double)total_kv;
    Py_ssize_t i, j; double fx, fy;
    tt_seg(t->db, t->ndb, B, &i, &fx);
    tt_seg(t->dc, t->ndc, (double)total_kv / B, &j, &fy);
    const double *z0 = t->dr + i * t->ndc, *z1 = z0 + t->ndc;
    double r = ((z0[j] * (1.0 - fy) + z0[j + 1] * fy) * (1.0 - fx)
                + (z1[j] * (1.0 - fy) + z1[j + 1] * fy) * fx);
    double ms = lin * r, out = 0.0;
    if (ms > 0.0 && modeled_ms_c(ms, t->to_ns, &out) < 0) return NULL;
    return PyFloat_FromDouble(out);
}

static PyMethodDef TableTiming_methods[] = {
    {"prefill_ms", (PyCFunction)TableTiming_prefill_ms, METH_VARARGS, "(new_tokens, cached_tokens, num_seqs) -> ms"},
    {"decode_ms", (PyCFunction)TableTiming_decode_ms, METH_VARARGS, "(batch_size, total_kv_tokens) -> ms"},
    {NULL}
};
static PyTypeObject TableTimingType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sim._kvpool.TableTiming",
    .tp_doc = "Pass times of a GPU table, speed-up 1 (see sim.gpu_timing.GpuTableTiming).",
    .tp_basicsize = sizeof(TableTiming),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)TableTiming_init,
    .tp_dealloc = (destructor)TableTiming_dealloc,
    .tp_methods = TableTiming_methods,
};

static PyObject *mod_prefix_len(PyObject *self, PyObject *args) {
    PyObject *keys, *present; KeySrc ks;
    if (!PyArg_ParseTuple(args, "OO", &keys, &present) || keysrc(keys, &ks) < 0) return NULL;
    Py_ssize_t n = 0;
    if (present == Py_None) return PyLong_FromSsize_t(0);
    if (Py_IS_TYPE(present, &KeyCounterType)) {         /* the router's indexes: probe in C */
        KeyCounter *m = (KeyCounter *)present;
        Py_ssize_t nk = ks.n;
        for (Py_ssize_t i = 0; i < PF_AHEAD; i++) ks_prefetch(&ks, i, m->t, sizeof(KcEntry), m->mask);
        for (; n < nk; n++) {
            int64_t k;
            ks_prefetch(&ks, n + PF_AHEAD, m->t, sizeof(KcEntry), m->mask);
            if (ks_get(&ks, n, &k) < 0) return NULL;
            if (!m->t[kc_find(m, k)].count) break;
        }
        return PyLong_FromSsize_t(n);
    }
    if (Py_IS_TYPE(present, &PubIndexType)) {          /* a router's published view */
        PubIndex *v = (PubIndex *)present;
        int pending = pub_prepare(v);
        if (pending < 0) return NULL;
        Py_ssize_t nk = ks.n;
        const KvPool *p = v->pool;                     /* the pool's entries decide most */
        for (Py_ssize_t i = 0; i < PF_AHEAD; i++) ks_prefetch(&ks, i, p->ht, sizeof(HtEntry), p->ht_mask);
        for (; n < nk; n++) {
            int64_t k;
            ks_prefetch(&ks, n + PF_AHEAD, p->ht, sizeof(HtEntry), p->ht_mask);
            if (ks_get(&ks, n, &k) < 0) return NULL;
            if (!pub_has(v, k, pending)) break;
        }
        return PyLong_FromSsize_t(n);
    }
    for (; n < ks.n; n++) {
        PyObject *o = ks_item(&ks, n);
        if (!o) return NULL;
        int r = PySequence_Contains(present, o);
        Py_DECREF(o);
        if (r < 0) return NULL;
        if (!r) break;
    }
    return PyLong_FromSsize_t(n);
}


/* == host-tier index (sim.host_tier.HostTier: residency, recency and pins) ================ */
/* The G2 host pool of one rank, keyed by prompt-block key: each present block is pending
 * (its device-to-host copy runs) or resident; resident blocks sit in an LRU list (oldest at
 * the head); loads pin blocks. Same semantics and API as sim.host_tier.PyHostIndex, which
 * documents them (tests run both). Slots 0..cap-1; hash: open addressing, linear probing,
 * backward-shift deletion, entry = slot + 1 (0 = empty). */
typedef struct { int64_t key; int32_t pins, prev, next; int8_t state, mark; } HSlot;
enum { HS_FREE = 0, HS_PENDING = 1, HS_RESIDENT = 2 };

typedef struct {
    PyObject_HEAD
    int64_t cap, n, nres;
    HSlot *s;
    int32_t *freed, *tmp;
    int64_t nfreed, fresh;
    int32_t head, tail;
    uint32_t *ht;
    uint64_t mask;
} HostIndex;

static inline int64_t hx_find(HostIndex *h, int64_t k) {
    uint64_t i = mix64((uint64_t)k) & h->mask;
    for (;;) {
        uint32_t e = h->ht[i];
        if (!e) return -1;
        if (h->s[e - 1].key == k) return (int64_t)e - 1;
        i = (i + 1) & h->mask;
    }
}
static inline void hx_ht_insert(HostIndex *h, int64_t k, int32_t slot) {
    uint64_t i = mix64((uint64_t)k) & h->mask;
    while (h->ht[i]) i = (i + 1) & h->mask;
    h->ht[i] = (uint32_t)slot + 1;
}
static void hx_ht_delete(HostIndex *h, int64_t k) {
    uint64_t i = mix64((uint64_t)k) & h->mask, j;
    while (h->s[h->ht[i] - 1].key != k) i = (i + 1) & h->mask;
    j = i;
    for (;;) {
        j = (j + 1) & h->mask;
        uint32_t e = h->ht[j];
        if (!e) break;
        uint64_t home = mix64((uint64_t)h->s[e - 1].key) & h->mask;
        if (((j - home) & h->mask) >= ((j - i) & h->mask)) { h->ht[i] = e; i = j; }
    }
    h->ht[i] = 0;
}
static inline void hx_unlink(HostIndex *h, int32_t x) {
    HSlot *s = h->s; int32_t p = s[x].prev, n = s[x].next;
    if (p >= 0) s[p].next = n; else h->head = n;
    if (n >= 0) s[n].prev = p; else h->tail = p;
}
static inline void hx_append(HostIndex *h, int32_t x) {
    HSlot *s = h->s;
    s[x].prev = h->tail; s[x].next = -1;
    if (h->tail >= 0) s[h->tail].next = x; else h->head = x;
    h->tail = x;
}

static int HostIndex_init(HostIndex *h, PyObject *args, PyObject *kw) {
    long long cap;
    if (!PyArg_ParseTuple(args, "L", &cap)) return -1;
    if (cap <= 0 || cap >= (1LL << 30)) { PyErr_SetString(PyExc_ValueError, "bad host capacity"); return -1; }
    uint64_t size = 8;
    while (size < (uint64_t)cap * 2) size <<= 1;
    PyMem_Free(h->s); PyMem_Free(h->freed); PyMem_Free(h->tmp); PyMem_Free(h->ht);
    h->s = PyMem_Calloc((size_t)cap, sizeof(HSlot));
    h->freed = PyMem_Malloc((size_t)cap * sizeof(int32_t));
    h->tmp = PyMem_Malloc((size_t)cap * sizeof(int32_t));
    h->ht = PyMem_Calloc((size_t)size, sizeof(uint32_t));
    if (!h->s || !h->freed || !h->tmp || !h->ht) { PyErr_NoMemory(); return -1; }
    h->cap = cap; h->n = h->nres = h->nfreed = h->fresh = 0;
    h->head = h->tail = -1; h->mask = size - 1;
    return 0;
}
static void HostIndex_dealloc(HostIndex *h) {
    PyMem_Free(h->s); PyMem_Free(h->freed); PyMem_Free(h->tmp); PyMem_Free(h->ht);
    Py_TYPE(h)->tp_free((PyObject *)h);
}
static Py_ssize_t HostIndex_len(HostIndex *h) { return (Py_ssize_t)h->n; }

static PyObject *HostIndex_match(HostIndex *h, PyObject *args) {
    PyObject *keys; Py_ssize_t start = 0, n = 0; int deferred = 0;
    KeySrc ks;
    if (!PyArg_ParseTuple(args, "O|n", &keys, &start) || keysrc(keys, &ks) < 0) return NULL;
    for (Py_ssize_t i = start; i < ks.n; i++) {
        int64_t k;
        if (ks_get(&ks, i, &k) < 0) return NULL;
        int64_t x = hx_find(h, k);
        if (x < 0) break;
        n++;
        if (h->s[x].state == HS_PENDING || h->s[x].pins) deferred = 1;
    }
    return Py_BuildValue("(nO)", n, deferred ? Py_True : Py_False);
}

static PyObject *HostIndex_resident_prefix(HostIndex *h, PyObject *args) {
    PyObject *keys; Py_ssize_t start = 0, n = 0;
    KeySrc ks;
    if (!PyArg_ParseTuple(args, "O|n", &keys, &start) || keysrc(keys, &ks) < 0) return NULL;
    for (Py_ssize_t i = start; i < ks.n; i++) {
        int64_t k;
        if (ks_get(&ks, i, &k) < 0) return NULL;
        int64_t x = hx_find(h, k);
        if (x < 0 || h->s[x].state != HS_RESIDENT) break;
        n++;
    }
    return PyLong_FromSsize_t(n);
}

static PyObject *HostIndex_touch_reversed(HostIndex *h, PyObject *keys) {
    KeySrc ks;
    if (keysrc(keys, &ks) < 0) return NULL;
    for (Py_ssize_t i = ks.n - 1; i >= 0; i--) {
        int64_t k;
        if (ks_get(&ks, i, &k) < 0) return NULL;
        int64_t x = hx_find(h, k);
        if (x >= 0 && h->s[x].state == HS_RESIDENT && h->tail != x) {
            hx_unlink(h, (int32_t)x); hx_append(h, (int32_t)x);
        }
    }
    Py_RETURN_NONE;
}

static PyObject *HostIndex_prepare(HostIndex *h, PyObject *keys) {
    KeySrc ks;
    if (keysrc(keys, &ks) < 0) return NULL;
    Py_ssize_t nk = ks.n, missing = 0;
    int64_t k, x;
    for (Py_ssize_t i = 0; i < nk; i++) {
        if (ks_get(&ks, i, &k) < 0) return NULL;
        if (hx_find(h, k) < 0) missing++;
    }
    if (!missing) Py_RETURN_NONE;
    int64_t short_ = missing - (h->cap - h->n);
    if (short_ > 0) {
        /* victims: least recent resident blocks, unpinned and not in the cohort */
        for (Py_ssize_t i = 0; i < nk; i++) {
            ks_get(&ks, i, &k);
            if ((x = hx_find(h, k)) >= 0) h->s[x].mark = 1;
        }
        int64_t nv = 0;
        for (int32_t y = h->head; y >= 0 && nv < short_; y = h->s[y].next)
            if (!h->s[y].pins && !h->s[y].mark) h->tmp[nv++] = y;
        for (Py_ssize_t i = 0; i < nk; i++) {
            ks_get(&ks, i, &k);
            if ((x = hx_find(h, k)) >= 0) h->s[x].mark = 0;
        }
        if (nv < short_) Py_RETURN_FALSE;
        for (int64_t v = 0; v < nv; v++) {
            int32_t y = h->tmp[v];
            hx_unlink(h, y);
            hx_ht_delete(h, h->s[y].key);
            h->s[y].state = HS_FREE;
            h->freed[h->nfreed++] = y;
            h->n--; h->nres--;
        }
    }
    PyObject *out = PyList_New(0);
    if (!out) return NULL;
    for (Py_ssize_t i = 0; i < nk; i++) {
        ks_get(&ks, i, &k);
        if (hx_find(h, k) >= 0) continue;      /* present (or repeated in the cohort) */
        int32_t y = h->nfreed ? h->freed[--h->nfreed] : (int32_t)h->fresh++;
        h->s[y].key = k; h->s[y].pins = 0; h->s[y].state = HS_PENDING; h->s[y].mark = 0;
        h->s[y].prev = h->s[y].next = -1;
        hx_ht_insert(h, k, y);
        h->n++;
        PyObject *o = ks_item(&ks, i);
        if (!o || PyList_Append(out, o) < 0) { Py_XDECREF(o); Py_DECREF(out); return NULL; }
        Py_DECREF(o);
    }
    return out;
}

static PyObject *HostIndex_complete(HostIndex *h, PyObject *keys) {
    KeySrc ks;
    if (keysrc(keys, &ks) < 0) return NULL;
    for (Py_ssize_t i = 0; i < ks.n; i++) {
        int64_t k, x;
        if (ks_get(&ks, i, &k) < 0) return NULL;
        x = hx_find(h, k);
        if (x >= 0 && h->s[x].state == HS_PENDING) {
            h->s[x].state = HS_RESIDENT; h->nres++; hx_append(h, (int32_t)x);
        }
    }
    Py_RETURN_NONE;
}

static PyObject *hx_pin(HostIndex *h, PyObject *keys, int d) {
    KeySrc ks;
    if (keysrc(keys, &ks) < 0) return NULL;
    for (Py_ssize_t i = 0; i < ks.n; i++) {
        int64_t k, x;
        if (ks_get(&ks, i, &k) < 0) return NULL;
        x = hx_find(h, k);
        if (x < 0 || h->s[x].pins + d < 0) { PyErr_SetString(PyExc_KeyError, "pin of an absent host block"); return NULL; }
        h->s[x].pins += d;
    }
    Py_RETURN_NONE;
}
static PyObject *HostIndex_pin(HostIndex *h, PyObject *keys) { return hx_pin(h, keys, 1); }
static PyObject *HostIndex_unpin(HostIndex *h, PyObject *keys) { return hx_pin(h, keys, -1); }

static PyObject *HostIndex_state(HostIndex *h, PyObject *key) {
    int64_t k, x;
    if (get_key(key, &k) < 0) return NULL;
    x = hx_find(h, k);
    return PyLong_FromLong(x < 0 ? 0 : h->s[x].state);
}

static PyObject *HostIndex_lru_keys(HostIndex *h, PyObject *Py_UNUSED(a)) {
    PyObject *out = PyList_New(0);
    if (!out) return NULL;
    for (int32_t y = h->head; y >= 0; y = h->s[y].next) {
        PyObject *o = PyLong_FromLongLong(h->s[y].key);
        if (!o || PyList_Append(out, o) < 0) { Py_XDECREF(o); Py_DECREF(out); return NULL; }
        Py_DECREF(o);
    }
    return out;
}

static PyObject *HostIndex_num_pinned(HostIndex *h, PyObject *Py_UNUSED(a)) {
    int64_t c = 0;
    for (int64_t y = 0; y < h->fresh; y++) if (h->s[y].state && h->s[y].pins) c++;
    return PyLong_FromLongLong(c);
}

static PyObject *HostIndex_check(HostIndex *h, PyObject *Py_UNUSED(a)) {
    int64_t present = 0, res = 0, walked = 0, entries = 0;
    for (int64_t y = 0; y < h->fresh; y++) {
        if (!h->s[y].state) continue;
        present++;
        if (h->s[y].state == HS_RESIDENT) res++;
        if (h->s[y].pins < 0 || h->s[y].mark) goto bad;
        if (hx_find(h, h->s[y].key) != y) goto bad;
    }
    for (uint64_t i = 0; i <= h->mask; i++) if (h->ht[i]) entries++;
    for (int32_t y = h->head, p = -1; y >= 0; p = y, y = h->s[y].next) {
        if (h->s[y].state != HS_RESIDENT || h->s[y].prev != p || ++walked > res) goto bad;
    }
    if (present != h->n || res != h->nres || walked != res || entries != present || h->n > h->cap) goto bad;
    Py_RETURN_NONE;
bad:
    PyErr_SetString(PyExc_AssertionError, "host index inconsistent");
    return NULL;
}

static PyMethodDef HostIndex_methods[] = {
    {"match", (PyCFunction)HostIndex_match, METH_VARARGS, "(leading present keys from start, any pending or pinned)"},
    {"resident_prefix", (PyCFunction)HostIndex_resident_prefix, METH_VARARGS, "leading resident keys from start"},
    {"touch_reversed", (PyCFunction)HostIndex_touch_reversed, METH_O, "LRU touch, last key first"},
    {"prepare", (PyCFunction)HostIndex_prepare, METH_O, "take room for a store cohort: new pending keys, None or False"},
    {"complete", (PyCFunction)HostIndex_complete, METH_O, "pending keys become resident (most recent)"},
    {"pin", (PyCFunction)HostIndex_pin, METH_O, "one more load reads each key"},
    {"unpin", (PyCFunction)HostIndex_unpin, METH_O, "one load less reads each key"},
    {"state", (PyCFunction)HostIndex_state, METH_O, "0 absent, 1 pending, 2 resident"},
    {"lru_keys", (PyCFunction)HostIndex_lru_keys, METH_NOARGS, "resident keys, oldest first"},
    {"num_pinned", (PyCFunction)HostIndex_num_pinned, METH_NOARGS, "present keys some load pins"},
    {"check", (PyCFunction)HostIndex_check, METH_NOARGS, "assert invariants"},
    {NULL}
};
static PySequenceMethods HostIndex_as_seq = {.sq_length = (lenfunc)HostIndex_len};
static PyTypeObject HostIndexType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sim._kvpool.HostIndex",
    .tp_doc = "Host-tier residency, LRU and pins (see sim.host_tier.PyHostIndex).",
    .tp_basicsize = sizeof(HostIndex),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)HostIndex_init,
    .tp_dealloc = (destructor)HostIndex_dealloc,
    .tp_methods = HostIndex_methods,
    .tp_as_sequence = &HostIndex_as_seq,
};

static PyMethodDef module_methods[] = {
    {"block_keys", mod_block_keys, METH_VARARGS, "engine-block keys of a trace prompt, packed (Keys)"},
    {"prefix_len", mod_prefix_len, METH_VARARGS, "how many leading keys are present"},
    {"poly_decode_ends", mod_poly_decode_ends, METH_VARARGS, "end times of a polynomial decode stretch"},
    {"table_decode_ends", mod_table_decode_ends, METH_VARARGS, "end times of a GPU-table decode stretch"},
    {NULL}
};

static struct PyModuleDef kvpool_module = {PyModuleDef_HEAD_INIT, "_kvpool", NULL, -1, module_methods};

PyMODINIT_FUNC PyInit__kvpool(void) {
    if (PyType_Ready(&KvPoolType) < 0 || PyType_Ready(&KeyCounterType) < 0 ||
        PyType_Ready(&BlocksType) < 0 || PyType_Ready(&HostIndexType) < 0 ||
        PyType_Ready(&PubIndexType) < 0 || PyType_Ready(&TableTimingType) < 0 ||
        PyType_Ready(&KeysType) < 0) return NULL;
    tuple_hash_native = check_tuple_hash();
    if (tuple_hash_native < 0) return NULL;
    if (add_event_methods() < 0) return NULL;
    PyObject *m = PyModule_Create(&kvpool_module);
    if (!m) return NULL;
    Py_INCREF(&KvPoolType);
    if (PyModule_AddObject(m, "KvPool", (PyObject *)&KvPoolType) < 0) {
        Py_DECREF(&KvPoolType); Py_DECREF(m); return NULL;
    }
    Py_INCREF(&BlocksType);
    if (PyModule_AddObject(m, "Blocks", (PyObject *)&BlocksType) < 0) {
        Py_DECREF(&BlocksType); Py_DECREF(m); return NULL;
    }
    if (PyModule_AddIntConstant(m, "NATIVE_PRIVATE_KEYS", tuple_hash_native) < 0) { Py_DECREF(m); return NULL; }
    Py_INCREF(&KeyCounterType);
    if (PyModule_AddObject(m, "KeyCounter", (PyObject *)&KeyCounterType) < 0) {
        Py_DECREF(&KeyCounterType); Py_DECREF(m); return NULL;
    }
    Py_INCREF(&HostIndexType);
    if (PyModule_AddObject(m, "HostIndex", (PyObject *)&HostIndexType) < 0) {
        Py_DECREF(&HostIndexType); Py_DECREF(m); return NULL;
    }
    Py_INCREF(&TableTimingType);
    if (PyModule_AddObject(m, "TableTiming", (PyObject *)&TableTimingType) < 0) {
        Py_DECREF(&TableTimingType); Py_DECREF(m); return NULL;
    }
    Py_INCREF(&KeysType);
    if (PyModule_AddObject(m, "Keys", (PyObject *)&KeysType) < 0) {
        Py_DECREF(&KeysType); Py_DECREF(m); return NULL;
    }
    return m;
}
