"""The `llm` judge against a real OpenAI-compatible server: llama.cpp's, serving the default
model's GGUF file on 127.0.0.1. Its ratings are poor (a 135M model); what is tested is the
requests, the parsing, the retries and the cache."""

import threading
import time

import pytest
import yaml
from conftest import free_port, start_llama_server, stop_server

from steerfront.errors import SteerfrontError
from steerfront.scoring.judge.llm import AnswerCache, Endpoint, LLMJudge
from steerfront.scoring.judge.rubrics import load_rubric

KEY_ENV = "STEERFRONT_TEST_JUDGE_KEY"
KEY = "sk-test-4f1d9c"
PAIRS = [
    ("Write a one-sentence review of a hotel.", "The rooms were clean and the staff kind."),
    ("Describe your morning.", "I woke up, made coffee, and read the news."),
    ("Name a fruit.", "Apple apple apple apple apple apple."),
]


@pytest.fixture(scope="module")
def server():
    port = free_port()
    process = start_llama_server(port, alias="judge", api_key=KEY)
    yield port, process
    stop_server(process)


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)


def short_rubric(tmp_path, questions=("concept", "instruction", "fluency")):
    """The axbench rubric as a file, with short answers (a quick test)."""
    source = load_rubric("axbench")
    document = {
        "parse": "rating",
        "scale": [0, 2],
        "combine": "harmonic",
        "max_tokens": 24,
        "temperature": 0,
        "questions": {q: source.questions[q] for q in questions},
    }
    if len(questions) == 1:
        del document["combine"]
    path = tmp_path / "short.yaml"
    path.write_text(yaml.safe_dump(document))
    return load_rubric(str(path))


def endpoint(port, **kw):
    return Endpoint(f"http://127.0.0.1:{port}/v1", "judge", key_env=KEY_ENV, **kw)


def test_answers_are_parsed_kept_and_cached(server, key, tmp_path):
    port, _ = server
    rubric = short_rubric(tmp_path)
    cache = AnswerCache(tmp_path / "answers.sqlite")
    judge = LLMJudge(rubric, endpoint(port, concurrency=2), cache, "positive sentiment")
    rows = judge.score(PAIRS)
    assert judge.asked == 9 and len(cache) == 9
    for row in rows:
        for q in ("concept", "instruction", "fluency"):
            assert isinstance(row[f"{q}_answer"], str) and row[f"{q}_answer"]
            assert row[q] == rubric.rating(row[f"{q}_answer"])  # None: kept, unparsable
            assert row[q] is None or row[q] in (0, 1, 2)
        assert ("harmonic" in row) and (row["harmonic"] is None) == any(
            row[q] is None for q in ("concept", "instruction", "fluency")
        )
    cache.close()
    cache = AnswerCache(tmp_path / "answers.sqlite")
    again = LLMJudge(rubric, endpoint(port), cache, "positive sentiment")
    assert again.score(PAIRS) == rows and again.asked == 0
    assert KEY.encode() not in (tmp_path / "answers.sqlite").read_bytes()
    for model, concept in (("other", "positive sentiment"), ("judge", "joy")):
        elsewhere = Endpoint("http://127.0.0.1:1/v1", model, retries=0)
        with pytest.raises(SteerfrontError):  # not answered from the cache: asked, and failed
            LLMJudge(rubric, elsewhere, cache, concept).score(PAIRS[:1])


def test_a_wrong_key_is_one_line_and_never_shown(server, monkeypatch, tmp_path):
    port, _ = server
    monkeypatch.setenv(KEY_ENV, "sk-wrong-77")
    judge = LLMJudge(short_rubric(tmp_path, ("fluency",)), endpoint(port),
                     AnswerCache(tmp_path / "a.sqlite"), "x")  # fmt: skip
    with pytest.raises(SteerfrontError, match="HTTP 401") as error:
        judge.score(PAIRS[:1])
    assert "sk-wrong-77" not in str(error.value) and "\n" not in str(error.value)


def test_preflight_fails_in_seconds(server, key):
    port, _ = server
    endpoint(port).check()
    started = time.monotonic()
    with pytest.raises(SteerfrontError, match="judge model 'gpt-9' is not served .* judge"):
        Endpoint(f"http://127.0.0.1:{port}/v1", "gpt-9", key_env=KEY_ENV).check()
    with pytest.raises(SteerfrontError, match="unreachable .*--judge-url"):
        Endpoint(f"http://127.0.0.1:{free_port()}/v1", "judge").check()
    assert time.monotonic() - started < 10


def test_a_server_killed_mid_pass_loses_nothing_and_the_pass_resumes(server, key, tmp_path):
    port, process = server
    rubric = short_rubric(tmp_path, ("fluency",))
    pairs = [(f"Say something about the number {i}.", f"The number {i} is fine.") for i in range(8)]
    cache = AnswerCache(tmp_path / "answers.sqlite")
    judge = LLMJudge(rubric, endpoint(port, concurrency=1, retries=2), cache, "x")
    failure = []

    def run():
        try:
            judge.score(pairs)
        except SteerfrontError as exc:
            failure.append(str(exc))

    thread = threading.Thread(target=run)
    thread.start()
    while len(cache) < 2:
        assert thread.is_alive(), failure
        time.sleep(0.05)
    stop_server(process)
    killed = time.monotonic()
    thread.join(timeout=60)
    assert time.monotonic() - killed < 30
    assert len(failure) == 1 and "\n" not in failure[0]
    assert "failed after 3 tries" in failure[0] and "run the same command again" in failure[0]
    kept = len(cache)
    assert 2 <= kept < len(pairs) and f"{kept} new answers kept" in failure[0]

    restarted = start_llama_server(port, alias="judge", api_key=KEY)
    try:
        resumed = LLMJudge(rubric, endpoint(port), cache, "x")
        rows = resumed.score(pairs)
        assert resumed.asked == len(pairs) - kept and len(cache) == len(pairs)
        assert all(row["fluency_answer"] for row in rows)
    finally:
        stop_server(restarted)
