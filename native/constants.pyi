NO_CODE: int
MAX_CODE: int
MAX_CID: int
MAX_SEC: int
