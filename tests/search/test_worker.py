import pytest

from steerfront.search import worker
from steerfront.search.worker import balanced, in_workers


def test_balanced_gives_the_largest_first_to_the_least_loaded_chunk():
    # the four built-in concepts' scored characters: the two large ones go to separate workers
    sizes = [6524, 10529, 6484, 14575]  # agreeableness, formality, risk_seeking, sentiment
    assert balanced(sizes, 2) == [[2, 3], [0, 1]]
    assert balanced([1.0, 1.0, 1.0], 2) == [[0, 2], [1]]
    assert balanced([5.0, 1.0], 4) == [[0], [1]]  # never more chunks than items
    assert balanced([], 2) == [[]]


@pytest.mark.parametrize("sizes", [None, [1.0, 9.0, 2.0, 8.0, 3.0]])
def test_in_workers_returns_results_in_the_order_of_the_items(monkeypatch, sizes):
    calls = []

    class Task:  # runs the work here, as a Ray worker would, one chunk per call
        def __init__(self, work):
            self.work = work

        def remote(self, chunk, *args):
            calls.append(chunk)
            return self.work(chunk, *args)

    monkeypatch.setattr(worker, "_task", lambda work, resources: Task(work))
    monkeypatch.setattr(worker, "_get", lambda refs: refs)
    items = ["a", "b", "c", "d", "e"]
    done = in_workers(
        lambda chunk, suffix: [x + suffix for x in chunk], {}, items, 2, "!", sizes=sizes
    )
    assert done == ["a!", "b!", "c!", "d!", "e!"]
    assert len(calls) == 2 and sorted(x for chunk in calls for x in chunk) == items
    if sizes:  # 9 + 2 + 1 against 8 + 3
        assert calls == [["a", "b", "c"], ["d", "e"]]
