import torch

from steerfront.batches import by_length, pad


def test_batches_are_length_sorted_under_a_token_budget():
    lengths = [5, 2, 9, 2, 4]
    assert by_length(lengths) == [[1, 3, 4, 0, 2]]
    # 2+2 rows of 2 (4 tokens), then 4 (and 5: 2 rows x 5 = 10 > 8), 5, 9 (alone, over budget)
    assert by_length(lengths, tokens=8) == [[1, 3], [4], [0], [2]]
    assert by_length(lengths, tokens=100, rows=2) == [[1, 3], [4, 0], [2]]
    assert by_length([]) == []


def test_padding_right_and_left_with_the_mask():
    ids, mask = pad([[7, 8, 9], [5]], value=1)
    assert ids.tolist() == [[7, 8, 9], [5, 1, 1]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    ids, mask = pad([[7, 8, 9], [5], []], value=1, left=True)
    assert ids.tolist() == [[7, 8, 9], [1, 1, 5], [1, 1, 1]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 0, 0]]
    assert ids.dtype == mask.dtype == torch.long
