"""The training schedule draws a fresh batch order every epoch: each epoch sees every sample once,
in an order of its own, the same order whichever step a (resumed) run asks for first."""
import pytest

from lora_vl.train.config import OptimConfig
from lora_vl.train.loop import Schedule

LENGTHS = [5, 40, 12, 33, 7, 21, 18, 3, 29, 11, 26, 14]  # 12 samples of distinct lengths


def schedule(group_by_length: bool, epochs: int = 3) -> Schedule:
    return Schedule(LENGTHS, OptimConfig(micro_batch_size=2, global_batch_size=4, epochs=epochs,
                                         group_by_length=group_by_length, seed=7))


def epoch_orders(s: Schedule, world: int = 1) -> list[list[int]]:
    """The sample indices in the order the steps take them, cut into epochs."""
    seen = []
    for step in range(s.total_steps):
        per_rank = [s.step_batches(step, rank, world) for rank in range(world)]
        # deal back in micro-batch order: micro-batch k of the step went to rank k % world
        for k in range(s.accum):
            seen += per_rank[k % world][k // world]
    n = len(LENGTHS)
    return [seen[e * n:(e + 1) * n] for e in range(len(seen) // n)]


@pytest.mark.parametrize("group_by_length", [False, True])
def test_each_epoch_is_a_fresh_permutation(group_by_length):
    s = schedule(group_by_length)
    assert s.total_steps == 3 * len(LENGTHS) // 4  # 12 samples, 4 per step, 3 epochs
    orders = epoch_orders(s)
    assert len(orders) == 3
    for order in orders:
        assert sorted(order) == list(range(len(LENGTHS)))  # every sample exactly once per epoch
    assert orders[0] != orders[1] and orders[1] != orders[2] and orders[0] != orders[2]


@pytest.mark.parametrize("group_by_length", [False, True])
def test_epoch_order_does_not_depend_on_what_was_asked_before(group_by_length):
    """A run resumed in epoch 2 (a new Schedule, asked for a late step first) and a run split over
    two processes take the very batches of the uninterrupted one-process run."""
    straight = schedule(group_by_length)
    want = [straight.step_batches(step) for step in range(straight.total_steps)]
    resumed = schedule(group_by_length)
    late = [resumed.step_batches(step) for step in range(straight.total_steps - 1, -1, -1)][::-1]
    assert late == want
    assert epoch_orders(schedule(group_by_length), world=2) == epoch_orders(schedule(group_by_length))
