"""Typed face of native/groupscan.pyx: one pass over an event log's window counting
rows for several candidate groups (ORs of ANDs with event counts)."""

import numpy as np
import numpy.typing as npt

def count_groups(
    cid: npt.NDArray[np.uint32],  # the log's contact column
    codes: npt.NDArray[np.uint32],  # the filtered code column (NO_CODE = NULL)
    r0: int,
    r1: int,
    code_groups: npt.NDArray[np.uint32],  # per code: bit g when group g admits it
    always: int,  # groups without a filter (every row of the window counts)
    group_cids: npt.NDArray[np.uint32],  # the groups' candidates, concatenated
    group_ends: npt.NDArray[np.intp],  # end of each group's part of group_cids
    count_min: npt.NDArray[np.uint32],  # per group, inclusive
    count_max: npt.NDArray[np.uint32],  # per group, inclusive (at most 32 groups)
) -> npt.NDArray[np.uint32]: ...  # ascending contacts passing one of their groups
