import pytest

from steerfront.search.trial import DENSE_SPAN, dense_grid


@pytest.mark.parametrize("m", [0.0, 0.7, 2.0, 3.9, 4.0])
def test_dense_grid_is_a_window_around_m_inside_the_range(m):
    grid = dense_grid(m, 0.0, 4.0, 9)
    assert m not in grid and len(grid) in (8, 9)  # 8 when m is one of the 9
    window = [min([*grid, m]), max([*grid, m])]
    assert 0.0 <= window[0] and window[1] <= 4.0
    assert window[1] - window[0] == pytest.approx(DENSE_SPAN * 4.0)
    if 1.0 <= m <= 3.0:  # far enough from the ends: centred
        assert (window[0] + window[1]) / 2 == pytest.approx(m)


def test_dense_grid_off_or_degenerate():
    assert dense_grid(1.0, 0.0, 4.0, 0) == []
    assert dense_grid(1.0, 1.0, 1.0, 9) == []


def test_a_workers_share_and_cache_budget(monkeypatch):
    import torch

    from steerfront import memory
    from steerfront.search.trial import SearchSetup

    monkeypatch.setattr("os.cpu_count", lambda: 8)
    monkeypatch.setattr(memory, "device_memory", lambda device: 64 * memory.GB)
    setup = SearchSetup("m", "c", None, 0.2, 0.2, 0, "/tmp", "s", {}, cpus_per_trial=2.0)
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert setup.share(cpu) == 0.25 and setup.share(gpu) == 0.0
    assert setup.cache_bytes(cpu) == int(memory.CACHE_SHARE * 0.25 * 64 * memory.GB)
    shared = SearchSetup("m", "c", None, 0.2, 0.2, 0, "/tmp", "s", {}, gpus_per_trial=0.5)
    assert shared.share(gpu) == 0.5
    assert shared.cache_bytes(gpu) == int(memory.CACHE_SHARE * 0.5 * 64 * memory.GB)
    given = SearchSetup("m", "c", None, 0.2, 0.2, 0, "/tmp", "s", {}, cache_gb=1.5)
    assert given.cache_bytes(cpu) == given.cache_bytes(gpu) == int(1.5 * memory.GB)
