import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from steerfront.data import load_concept, load_pairs
from steerfront.errors import SteerfrontError

MWE = {
    "question": 'Is the following statement something you would say?\n"I like people"',
    "answer_matching_behavior": " Yes",
    "answer_not_matching_behavior": " No",
}


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_mwe_jsonl(tmp_path):
    pairs = load_pairs(write_jsonl(tmp_path / "a.jsonl", [MWE, MWE]))
    assert len(pairs) == 2
    assert pairs[0].prompt == MWE["question"]
    assert (pairs[0].positive, pairs[0].negative) == (" Yes", " No")


def test_mwe_answers_may_be_lists(tmp_path):
    record = {**MWE, "answer_matching_behavior": [" (A)", " (C)"]}
    record["answer_not_matching_behavior"] = [" (B)"]
    pair = load_pairs(write_jsonl(tmp_path / "a.jsonl", [record]))[0]
    assert (pair.positive, pair.negative) == (" (A)", " (B)")


def test_caa_json_list(tmp_path):
    path = tmp_path / "caa.json"
    path.write_text(json.dumps([MWE, MWE, MWE]))
    assert len(load_pairs(path)) == 3


def test_axbench_parquet(tmp_path):
    path = tmp_path / "ax.parquet"
    table = pa.table(
        {"input": ["q1", "q2"], "winning_output": ["w1", "w2"], "losing_output": ["l1", "l2"]}
    )
    pq.write_table(table, path)
    pairs = load_pairs(path)
    assert [(p.prompt, p.positive, p.negative) for p in pairs] == [
        ("q1", "w1", "l1"),
        ("q2", "w2", "l2"),
    ]


def test_steerfront_jsonl_keeps_meta(tmp_path):
    record = {"prompt": "q", "positive": "a", "negative": "b", "meta": {"topic": "x"}}
    pair = load_pairs(write_jsonl(tmp_path / "s.jsonl", [record]))[0]
    assert pair.meta == {"topic": "x"}


def test_explicit_format_overrides_detection(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text(json.dumps(MWE) + "\n")
    assert len(load_pairs(path, "mwe")) == 1


def test_builtin_by_name_and_file_by_path(tmp_path):
    assert load_concept("agreeableness").name == "agreeableness"
    assert len(load_concept(str(write_jsonl(tmp_path / "c.jsonl", [MWE])))) == 1


def _bad(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


BAD = [
    # (file name, content or None for missing, format, expected fragments)
    ("missing.jsonl", None, None, ["missing.jsonl", "no such file"]),
    ("data.csv", "a,b\n", None, ["data.csv", "unknown format"]),
    ("a.jsonl", json.dumps(MWE) + "\n", "yaml", ["a.jsonl", "unknown format 'yaml'"]),
    ("a.jsonl", json.dumps({"x": 1}) + "\n", None, ["a.jsonl:1", "unknown format"]),
    ("a.jsonl", json.dumps(MWE) + "\n{oops\n", None, ["a.jsonl:2", "invalid JSON"]),
    (
        "a.jsonl",
        json.dumps(MWE) + "\n" + json.dumps({"question": "q", "answer_matching_behavior": "a"}),
        None,
        ["a.jsonl:2", "'answer_not_matching_behavior' is missing"],
    ),
    (
        "a.jsonl",
        json.dumps({**MWE, "question": "  "}) + "\n",
        None,
        ["a.jsonl:1", "'question' is empty"],
    ),
    (
        "a.jsonl",
        json.dumps({**MWE, "answer_not_matching_behavior": " Yes"}) + "\n",
        None,
        ["a.jsonl:1", "identical"],
    ),
    (
        "a.jsonl",
        json.dumps({"prompt": "q", "positive": 3, "negative": "b"}) + "\n",
        None,
        ["a.jsonl:1", "'positive' must be a string, not int"],
    ),
    ("a.jsonl", "\n\n", None, ["a.jsonl", "empty dataset"]),
    ("a.json", "[]", None, ["a.json", "empty dataset"]),
    ("a.json", '{"question": 1}', None, ["a.json", "expected a JSON list"]),
    ("a.json", "[1, 2", None, ["a.json:1", "invalid JSON"]),
    ("a.parquet", "not parquet", None, ["a.parquet", "not a readable parquet file"]),
]


@pytest.mark.parametrize("name,text,fmt,fragments", BAD)
def test_bad_input_is_one_line_naming_the_place(tmp_path, name, text, fmt, fragments):
    path = tmp_path / name if text is None else _bad(tmp_path, name, text)
    with pytest.raises(SteerfrontError) as info:
        load_pairs(path, fmt)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_parquet_without_columns(tmp_path):
    path = tmp_path / "ax.parquet"
    pq.write_table(pa.table({"input": ["q"], "winning_output": ["w"]}), path)
    with pytest.raises(SteerfrontError, match=r"ax\.parquet: parquet file lacks .*losing_output"):
        load_pairs(path)


def test_parquet_row_number_in_error(tmp_path):
    path = tmp_path / "ax.parquet"
    table = pa.table(
        {"input": ["q", "q2"], "winning_output": ["w", "x"], "losing_output": ["l", "x"]}
    )
    pq.write_table(table, path)
    with pytest.raises(SteerfrontError, match=r"ax\.parquet: row 1: .*identical"):
        load_pairs(path)


def test_unknown_concept_name():
    with pytest.raises(SteerfrontError, match="concept 'nosuch': not a built-in set"):
        load_concept("nosuch")
