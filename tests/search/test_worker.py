import os
import time

from steerfront.search.run import ray_session
from steerfront.search.worker import in_workers


def test_in_workers_hands_the_largest_item_first_to_whichever_worker_is_free():
    """Two Ray workers: the items leave the queue largest first, and one that costs more than
    its size said (c) does not hold up the items after it; results in the items' order."""

    def work(item: str, suffix: str) -> tuple[str, int, float]:
        started = time.time()
        time.sleep(5.0 if item == "c" else 0.2)
        return item + suffix, os.getpid(), started

    items = ["a", "b", "c", "d", "e"]
    with ray_session(None):
        done = in_workers(work, {"cpu": 1, "gpu": 0}, items, 2, "!", sizes=[9, 1, 2, 8, 3])
    assert [text for text, _, _ in done] == ["a!", "b!", "c!", "d!", "e!"]
    by_start = sorted(range(len(items)), key=lambda i: done[i][2])
    assert [items[i] for i in by_start] == ["a", "d", "e", "c", "b"]
    pids = {item: pid for item, (_, pid, _) in zip(items, done, strict=True)}
    assert len(set(pids.values())) == 2 and pids["b"] != pids["c"]
