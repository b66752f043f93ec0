"""Concept sets for a launch: a folder, a JSONL list, a grouped parquet; bad ones in one line."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from steerfront.data.concepts import concept_label, concept_set, grouped, split_groups
from steerfront.errors import SteerfrontError


def test_a_folder_is_its_concept_files_in_order(tmp_path):
    for name in ("b.jsonl", "a.parquet", "notes.txt"):
        (tmp_path / name).write_text("")
    assert concept_set(tmp_path) == [str(tmp_path / "a.parquet"), str(tmp_path / "b.jsonl")]


def test_a_jsonl_list_names_builtins_and_files_relative_to_it(tmp_path):
    (tmp_path / "mine.jsonl").write_text("")
    (tmp_path / "list.jsonl").write_text('"sentiment"\n\n{"concept": "mine.jsonl"}\n')
    assert concept_set(tmp_path / "list.jsonl") == ["sentiment", str(tmp_path / "mine.jsonl")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('"sentiment"\n{oops\n', r"list\.jsonl:2: invalid JSON"),
        (
            '{"prompt": "p", "positive": "a", "negative": "b"}\n',
            r"list\.jsonl:1: expected a concept",
        ),
        ("\n", r"the list is empty"),
    ],
)
def test_a_bad_list_names_the_line(tmp_path, text, message):
    (tmp_path / "list.jsonl").write_text(text)
    with pytest.raises(SteerfrontError, match=message):
        concept_set(tmp_path / "list.jsonl")


def test_other_files_and_missing_paths_are_refused(tmp_path):
    (tmp_path / "x.csv").write_text("")
    with pytest.raises(SteerfrontError, match="expected a folder, a JSONL list or a parquet"):
        concept_set(tmp_path / "x.csv")
    with pytest.raises(SteerfrontError, match="no such file or folder"):
        concept_set(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SteerfrontError, match="no concept files"):
        concept_set(tmp_path / "empty")


def test_a_grouped_parquet_splits_into_one_file_per_concept(tmp_path):
    rows = [{"input": f"q{i}", "winning_output": "w", "losing_output": "l",
             "output_concept": "a cat" if i % 2 else "dogs"} for i in range(6)]  # fmt: skip
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "set.parquet")
    assert concept_set(tmp_path / "set.parquet") == [str(tmp_path / "set.parquet")]
    assert grouped(tmp_path / "set.parquet") == "output_concept"
    files = split_groups(tmp_path / "set.parquet", "output_concept", tmp_path / "out")
    assert files == [
        str(tmp_path / "out" / "dogs.parquet"),
        str(tmp_path / "out" / "a_cat.parquet"),
    ]
    assert [pq.read_table(f).num_rows for f in files] == [3, 3]


def test_labels_are_search_name_safe():
    assert concept_label("sentiment") == "sentiment"
    assert concept_label("/data/my concepts/Power seeking.jsonl") == "Power_seeking"
