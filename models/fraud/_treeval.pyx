# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""Compiled evaluator of a :class:`models.fraud.compiled.CompiledForest` (built by ``pip install -e .``).

The forest is data: flat C arrays built from the model's :class:`~models.fraud.compiled.TreeArrays` when the
model is loaded (so a model promoted in the registry is picked up without a restart and without a compiler).
The semantics are exactly those of the generated pure-Python code in ``compiled.py`` (the reference):

* a node sends a value left when ``v <= threshold``; when ``MISSING <= threshold`` a NaN goes left too
  (the Python code's ``not v > threshold``), otherwise right;
* the margin is ``0.0`` plus each tree's leaf value in tree order (the same additions in the same order:
  bit-equal to the Python sum);
* contributions (Saabas path attribution) add ``child_value - node_value`` (precomputed in Python) per
  model feature in tree and path order, again the same additions as the generated code.

``tests/test_fraud_treeval.py`` checks raw scores, contributions and explanations bit for bit against the
pure-Python evaluator. ``ABI`` is bumped whenever the constructor's arguments or the semantics change;
``SOURCE_SHA256`` is the hash of this file at build time, so ``compiled.py`` refuses a stale build.
"""

from cpython.float cimport PyFloat_AS_DOUBLE, PyFloat_CheckExact
from cpython.list cimport PyList_GET_SIZE
from cpython.ref cimport PyObject
from libc.stdlib cimport free, malloc
from libc.string cimport memset


cdef extern from "Python.h":
    PyObject* PyList_GET_ITEM_RAW "PyList_GET_ITEM" (object, Py_ssize_t)


cdef extern from *:
    """
    #ifndef FUELCARD_TREEVAL_SRC_SHA
    #define FUELCARD_TREEVAL_SRC_SHA ""
    #endif
    """
    const char* FUELCARD_TREEVAL_SRC_SHA


ABI = 1
SOURCE_SHA256 = FUELCARD_TREEVAL_SRC_SHA.decode("ascii")

cdef enum:
    MAX_VALUES = 1024


cdef class Forest:
    """Flat arrays of a forest; ``raw``/``contributions``/``top_positive`` of one full feature row."""

    cdef int n_trees, n_nodes, n_leaves, n_used, n_features
    cdef Py_ssize_t min_len
    cdef int* roots
    cdef int* slot
    cdef int* mfeat
    cdef double* thr
    cdef unsigned char* nan_left
    cdef int* left
    cdef int* right
    cdef double* dleft
    cdef double* dright
    cdef double* leaf
    cdef Py_ssize_t* cols

    def __cinit__(self):
        self.roots = NULL
        self.slot = NULL
        self.mfeat = NULL
        self.thr = NULL
        self.nan_left = NULL
        self.left = NULL
        self.right = NULL
        self.dleft = NULL
        self.dright = NULL
        self.leaf = NULL
        self.cols = NULL

    def __init__(self, roots, slot, mfeat, thr, nan_left, left, right, dleft, dright, leaf, cols,
                 int n_features):
        cdef Py_ssize_t i
        self.n_trees = len(roots)
        self.n_nodes = len(slot)
        self.n_leaves = len(leaf)
        self.n_used = len(cols)
        self.n_features = n_features
        if self.n_used > MAX_VALUES or n_features > MAX_VALUES:
            raise ValueError("too many features for the compiled evaluator")
        for seq in (mfeat, thr, nan_left, left, right, dleft, dright):
            if len(seq) != self.n_nodes:
                raise ValueError("node arrays of different lengths")
        self.roots = <int*>malloc(max(self.n_trees, 1) * sizeof(int))
        self.slot = <int*>malloc(max(self.n_nodes, 1) * sizeof(int))
        self.mfeat = <int*>malloc(max(self.n_nodes, 1) * sizeof(int))
        self.thr = <double*>malloc(max(self.n_nodes, 1) * sizeof(double))
        self.nan_left = <unsigned char*>malloc(max(self.n_nodes, 1))
        self.left = <int*>malloc(max(self.n_nodes, 1) * sizeof(int))
        self.right = <int*>malloc(max(self.n_nodes, 1) * sizeof(int))
        self.dleft = <double*>malloc(max(self.n_nodes, 1) * sizeof(double))
        self.dright = <double*>malloc(max(self.n_nodes, 1) * sizeof(double))
        self.leaf = <double*>malloc(max(self.n_leaves, 1) * sizeof(double))
        self.cols = <Py_ssize_t*>malloc(max(self.n_used, 1) * sizeof(Py_ssize_t))
        if (self.roots == NULL or self.slot == NULL or self.mfeat == NULL or self.thr == NULL
                or self.nan_left == NULL or self.left == NULL or self.right == NULL or self.dleft == NULL
                or self.dright == NULL or self.leaf == NULL or self.cols == NULL):
            raise MemoryError()
        for i in range(self.n_trees):
            self.roots[i] = roots[i]
            self._check_child(self.roots[i])
        self.min_len = 0
        for i in range(self.n_used):
            self.cols[i] = cols[i]
            if self.cols[i] < 0:
                raise ValueError("negative column")
            if self.cols[i] + 1 > self.min_len:
                self.min_len = self.cols[i] + 1
        for i in range(self.n_leaves):
            self.leaf[i] = leaf[i]
        for i in range(self.n_nodes):
            self.slot[i] = slot[i]
            self.mfeat[i] = mfeat[i]
            self.thr[i] = thr[i]
            self.nan_left[i] = 1 if nan_left[i] else 0
            self.left[i] = left[i]
            self.right[i] = right[i]
            self.dleft[i] = dleft[i]
            self.dright[i] = dright[i]
            if not 0 <= self.slot[i] < self.n_used or not 0 <= self.mfeat[i] < n_features:
                raise ValueError("feature index out of range")
            self._check_child(self.left[i])
            self._check_child(self.right[i])
            # children come after their parent (pre-order): the walk always ends at a leaf
            if (self.left[i] >= 0 and self.left[i] <= i) or (self.right[i] >= 0 and self.right[i] <= i):
                raise ValueError("nodes are not in pre-order")

    cdef int _check_child(self, int child) except -1:
        if child >= 0:
            if child >= self.n_nodes:
                raise ValueError("child index out of range")
        elif ~child >= self.n_leaves:
            raise ValueError("leaf index out of range")
        return 0

    def __dealloc__(self):
        free(self.roots)
        free(self.slot)
        free(self.mfeat)
        free(self.thr)
        free(self.nan_left)
        free(self.left)
        free(self.right)
        free(self.dleft)
        free(self.dright)
        free(self.leaf)
        free(self.cols)

    cdef int _load(self, object x, double* vals) except -1:
        cdef Py_ssize_t k
        cdef PyObject* p
        if type(x) is list:
            if PyList_GET_SIZE(x) < self.min_len:
                raise IndexError("feature row too short")
            for k in range(self.n_used):
                p = PyList_GET_ITEM_RAW(x, self.cols[k])
                if PyFloat_CheckExact(<object>p):
                    vals[k] = PyFloat_AS_DOUBLE(<object>p)
                else:
                    vals[k] = float(<object>p)
        else:
            for k in range(self.n_used):
                vals[k] = float(x[self.cols[k]])
        return 0

    cdef double _raw(self, const double* vals) noexcept:
        cdef double s = 0.0
        cdef double v
        cdef int node, t
        for t in range(self.n_trees):
            node = self.roots[t]
            while node >= 0:
                v = vals[self.slot[node]]
                if v <= self.thr[node] or (self.nan_left[node] and v != v):
                    node = self.left[node]
                else:
                    node = self.right[node]
            s += self.leaf[~node]
        return s

    cdef double _contrib(self, const double* vals, double* c) noexcept:
        cdef double s = 0.0
        cdef double v
        cdef int node, t
        memset(c, 0, self.n_features * sizeof(double))
        for t in range(self.n_trees):
            node = self.roots[t]
            while node >= 0:
                v = vals[self.slot[node]]
                if v <= self.thr[node] or (self.nan_left[node] and v != v):
                    c[self.mfeat[node]] += self.dleft[node]
                    node = self.left[node]
                else:
                    c[self.mfeat[node]] += self.dright[node]
                    node = self.right[node]
            s += self.leaf[~node]
        return s

    def raw(self, x):
        """Raw margin of one full feature row (a list is read directly; any sequence works)."""
        cdef double vals[MAX_VALUES]
        self._load(x, vals)
        return self._raw(vals)

    def contributions(self, x):
        """``(margin, contributions)``: one float per model feature (they sum to margin - bias)."""
        cdef double vals[MAX_VALUES]
        cdef double c[MAX_VALUES]
        cdef double s
        cdef int i
        self._load(x, vals)
        s = self._contrib(vals, c)
        return s, [c[i] for i in range(self.n_features)]

    def top_positive(self, x, int k):
        """The ``k`` model features with the largest positive contributions, largest first (ties: lower
        index first): a list of ``(model feature index, contribution)``."""
        cdef double vals[MAX_VALUES]
        cdef double c[MAX_VALUES]
        cdef unsigned char taken[MAX_VALUES]
        cdef int i, j, best
        cdef double bv
        self._load(x, vals)
        self._contrib(vals, c)
        memset(taken, 0, self.n_features)
        out = []
        for j in range(k):
            best = -1
            bv = 0.0
            for i in range(self.n_features):
                if not taken[i] and c[i] > bv:
                    best = i
                    bv = c[i]
            if best < 0:
                break
            taken[best] = 1
            out.append((best, bv))
        return out

    def raw_into(self, const double[:, ::1] X, double[::1] out):
        """Raw margins of the rows of a C-contiguous float64 matrix (full rows) into ``out``."""
        cdef double vals[MAX_VALUES]
        cdef Py_ssize_t r, k
        if X.shape[0] != out.shape[0]:
            raise ValueError("out has the wrong length")
        if X.shape[0] and X.shape[1] < self.min_len:
            raise IndexError("feature row too short")
        for r in range(X.shape[0]):
            for k in range(self.n_used):
                vals[k] = X[r, self.cols[k]]
            out[r] = self._raw(vals)
