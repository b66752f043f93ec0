"""Rubrics: the built-in ones load, ratings are read as documented, bad files are refused."""

import pytest
import yaml

from steerfront.errors import SteerfrontError
from steerfront.scoring.judge.rubrics import load_rubric


def test_axbench_reads_the_last_rating_within_its_scale():
    rubric = load_rubric("axbench")
    assert list(rubric.questions) == ["concept", "instruction", "fluency"]
    assert rubric.scores == ["concept", "instruction", "fluency", "harmonic"]
    assert rubric.rating("It shows.\nRating: [[2]]") == 2
    assert rubric.rating("Rating: [[0]] first, then Rating: [[1]]") == 1
    assert rubric.rating("Rating: 1.") == 1
    assert rubric.rating("Rating: [[3]]") is None  # outside 0..2
    assert rubric.rating("I rate it two.") is None
    assert rubric.rating("Rating: [[two]]") is None


def test_harmonic_mean_is_zero_when_any_rating_is():
    rubric = load_rubric("axbench")
    assert rubric.combined({"concept": 2, "instruction": 1, "fluency": 2}) == pytest.approx(1.5)
    assert rubric.combined({"concept": 2, "instruction": 0, "fluency": 2}) == 0
    assert rubric.combined({"concept": 2, "instruction": None, "fluency": 2}) is None


def test_bipo_reads_the_first_score_on_its_first_line():
    rubric = load_rubric("bipo")
    assert rubric.scores == ["concept"] and rubric.temperature == 0
    assert rubric.rating("3. The response is willing") == 3
    assert rubric.rating("Score: 7 out of ten, I mean 2") == 2
    assert rubric.rating("\nThe response\n4") is None  # not on the first line
    messages = rubric.messages("concept", "Q?", "A.", "unused")
    assert messages[0]["role"] == "system" and "Question: Q?" in messages[1]["content"]


@pytest.mark.parametrize(
    "answer, score",
    [
        ("On a scale of 1 to 4, I would rate this response a 3.", 3),
        ("On a scale of 1 to 4 ... 3", 3),
        ("On a scale from 1-4: 2", 2),
        ("Rating (1 – 4): 4", 4),
        ("3 out of 4", 3),
        ("3/4, willing within limits", 3),
        ("Between 1 and 4, it is a 1", 1),
        ("On a scale of 1 to 4", None),  # the scale alone: no score
    ],
)
def test_bipo_does_not_read_a_restated_scale_as_the_score(answer, score):
    assert load_rubric("bipo").rating(answer) == score


def test_placeholders_are_filled_literally():
    rubric = load_rubric("axbench")
    text = rubric.messages("concept", "p", "a {generation} with {braces}", "joy")[0]["content"]
    assert "a {generation} with {braces}" in text and "joy" in text


def rubric_file(tmp_path, **changes):
    document = {"parse": "rating", "scale": [0, 2], "questions": {"concept": "{generation}"}}
    document.update(changes)
    path = tmp_path / "rubric.yaml"
    path.write_text(yaml.safe_dump(document))
    return str(path)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"questions": {"concept": "Rate {prompt}"}}, "lacks the {generation} placeholder"),
        ({"questions": {"concept": "{generation} {answer}"}}, "unknown placeholder {answer}"),
        ({"questions": {}}, "'questions' must map"),
        ({"parse": "json"}, "'parse' must be one of"),
        ({"scale": [2, 0]}, "'scale' must be"),
        ({"combine": "mean"}, "'combine' may only be"),
        ({"colour": "red"}, "unknown field 'colour'"),
    ],
)
def test_bad_rubric_files_are_refused_in_one_line(tmp_path, changes, message):
    path = rubric_file(tmp_path, **changes)
    with pytest.raises(SteerfrontError, match="rubric file .*rubric.yaml") as error:
        load_rubric(path)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_unknown_rubric_and_unreadable_file(tmp_path):
    with pytest.raises(SteerfrontError, match="not a built-in rubric"):
        load_rubric("helpfulness")
    path = tmp_path / "bad.yaml"
    path.write_text("questions: [unclosed")
    with pytest.raises(SteerfrontError, match="not readable YAML"):
        load_rubric(str(path))
