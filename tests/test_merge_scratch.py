"""The dense merge's reused full-size buffers (`lora_vl/merge/scratch.py`): a slot is one buffer
while its pool is active, grown when a larger shape asks for it; outside a pool, and in another
thread, every buffer is fresh."""
import threading

import torch

from lora_vl.merge import scratch


def test_a_slot_is_one_buffer_while_its_pool_is_active_and_grows_for_larger_shapes():
    pool: dict = {}
    with scratch.reuse(pool):
        a = scratch.buffer("delta0", (4, 6))
        b = scratch.buffer("delta0", (3, 5))  # smaller: a view of the same memory
        other = scratch.buffer("delta1", (4, 6))
        assert b.data_ptr() == a.data_ptr() != other.data_ptr() and b.shape == (3, 5)
        big = scratch.buffer("delta0", (10, 10))
        assert big.shape == (10, 10) and pool[("delta0", torch.float32)].numel() == 100
        assert scratch.buffer("delta0", (2, 2), torch.float64).dtype == torch.float64  # a dtype is its own slot
    kept = pool[("delta0", torch.float32)].data_ptr()
    with scratch.reuse(pool):  # the caller's pool outlives the block: the same memory next time
        assert scratch.buffer("delta0", (4, 6)).data_ptr() == kept
    assert scratch.buffer("delta0", (4, 6)).data_ptr() != kept  # no pool active: fresh


def test_another_thread_does_not_see_this_threads_pool():
    seen = []
    with scratch.reuse({}):
        mine = scratch.buffer("x", (8,))
        t = threading.Thread(target=lambda: seen.append(scratch.buffer("x", (8,)).data_ptr()))
        t.start()
        t.join()
        assert scratch.buffer("x", (8,)).data_ptr() == mine.data_ptr()
    assert seen and seen[0] != mine.data_ptr()
