"""Typed face of native/bitset.pyx: dense uint64 bitsets <-> sorted cids <-> BitMap."""

import numpy as np
import numpy.typing as npt
from pyroaring import AbstractBitMap, BitMap

Words = npt.NDArray[np.uint64]  # word_t[::1]; bit i of words[i >> 6] is cid i
Cids = npt.NDArray[np.uint32]  # cid_t[::1]

def words_for(n_bits: int) -> Words: ...  # int64_t n_bits in [0, 2**32]; zeroed
def popcount(words: Words) -> int: ...  # const word_t[::1]
def bitset_to_cids(words: Words) -> Cids: ...  # const word_t[::1] -> sorted cid_t[::1]
def bitset_to_bitmap(words: Words) -> BitMap: ...  # const word_t[::1]
def cids_to_bitmap(cids: Cids) -> BitMap: ...  # const cid_t[::1], strictly increasing
def distinct_to_bitmap(
    cids: Cids,  # const cid_t[::1], any order, repeats allowed
    scratch: Words,  # word_t[::1] INOUT: all zero on entry and on return
) -> BitMap: ...
def bitmap_to_bitset(
    bm: AbstractBitMap,
    n_bits: int,  # int64_t; every cid of bm < n_bits
) -> Words: ...
def set_cids(
    words: Words, cids: Cids
) -> None: ...  # word_t[::1] INOUT, const cid_t[::1]
def clear_cids(
    words: Words, cids: Cids
) -> None: ...  # word_t[::1] INOUT, const cid_t[::1]
