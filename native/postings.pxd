# Inverted postings of one (event type, dimension): value code -> sorted row numbers of the
# type's event log. Declared here so eventlog.pyx and eventscan.pyx can reach the C arrays.
from libc.stdint cimport uint32_t, uint64_t
from segd.native._types cimport row_t, code_t

cdef struct RowList:
    row_t* rows          # ascending row numbers (= time order) of events with this code
    uint32_t n           # rows in use
    # rows allocated; 0 with n > 0: `rows` is borrowed from a snapshot array (never
    # realloc'd or freed; copied on its first growth)
    uint32_t cap

cdef class Postings:
    cdef RowList* lists          # indexed by code; lists[code].rows may be NULL (no events)
    cdef Py_ssize_t n_codes      # entries allocated in `lists`
    cdef uint64_t total          # sum of lists[*].n: postings held
    cdef uint64_t allocated      # sum of lists[*].cap (or .n when borrowed): memory accounting
    cdef object _backing         # array that borrowed lists point into (see from_arrays)

    cdef int _ensure_codes(self, Py_ssize_t n_codes) except -1
    cdef int _reserve(self, code_t code, uint32_t extra) noexcept nogil
