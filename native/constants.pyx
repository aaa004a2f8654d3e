"""The constants of the native core, exported to Python from their one definition.

``native/_types.pxd`` defines the C types and the ``NO_CODE`` sentinel; Python code takes
them from here (``from segd.native import NO_CODE``), never from a literal of its own.
"""

from segd.native._types cimport NO_CODE as _NO_CODE, cid_t, code_t, sec_t

NO_CODE = <code_t>_NO_CODE
"""code_t sentinel of a missing (NULL) dictionary value: uint32 all ones."""

MAX_CODE = <code_t>(_NO_CODE - 1)
"""The largest dictionary code a value can get (NO_CODE is reserved)."""

MAX_CID = <cid_t>(_NO_CODE - 1)
"""The largest contact id (cids are uint32; NO_CODE is reserved)."""

MAX_SEC = <sec_t>(-1)
"""The largest event time: uint32 seconds since 1970 (2106-02-07)."""
