# Shared C types of the segd core. Every .pyx cimports these, so a column's dtype and its
# memoryview type are named once (sklearn's _typedefs.pxd habit).
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t

ctypedef uint32_t cid_t      # internal dense contact id (numpy uint32)
ctypedef uint32_t row_t      # row number inside one event type's log (numpy uint32)
ctypedef uint32_t code_t     # dictionary code of a string value (numpy uint32)
ctypedef uint32_t sec_t      # event time: UTC seconds since 1970 (numpy uint32, to 2106)
ctypedef int64_t ms_t        # attribute timestamps: UTC milliseconds (numpy int64)
ctypedef uint64_t word_t     # one 64-bit word of a dense bitset (numpy uint64)

cdef enum:
    NO_CODE = 0xFFFFFFFF     # code_t sentinel for a missing (NULL) value
