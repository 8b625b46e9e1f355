"""The first bytes of every stored document (status, timeline, cohort statistics): its pending flag.

Both are 17 bytes, so a write flips a document in place (shared.store, "pending"); a reader with the
document's first bytes knows whether it reflects every acknowledged write.
"""

PENDING_FALSE = b'{"pending":false,'
PENDING_TRUE = b'{"pending":true ,'
assert len(PENDING_FALSE) == len(PENDING_TRUE)
