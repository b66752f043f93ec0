"""The `llm` judge: any OpenAI-compatible chat endpoint, asked one question per rubric score.

Requests run from the driver, a bounded number at once, and are retried with exponential
backoff on 429, 5xx, time-outs and refused connections. Every answer is written to an on-disk
cache (SQLite, keyed by rubric, question, prompt, generation and judge model) as soon as it
arrives, so a pass that stops keeps what it was told and a repeated or resumed pass asks only
for what is missing. The API key is read from an environment variable and only ever put in
the request's Authorization header: never logged, printed or written.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from steerfront.errors import SteerfrontError
from steerfront.scoring.judge.rubrics import Rubric

RETRY_STATUS = (429, 500, 502, 503, 504)


@dataclass(frozen=True)
class Endpoint:
    """Where the judge model answers, and how hard to try."""

    url: str  # base URL, e.g. https://api.openai.com/v1 (…/chat/completions is appended)
    model: str
    key_env: str = "OPENAI_API_KEY"  # the environment variable that holds the key
    concurrency: int = 8
    retries: int = 4  # tries after the first, with backoff 0.5 s, 1 s, 2 s, ...
    timeout: float = 60.0  # seconds per request

    def _request(self, path: str, body: dict | None, timeout: float) -> dict:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.url.rstrip('/')}/{path}", data, headers)
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())

    def check(self) -> None:
        """Fail in seconds, before any generation, when the endpoint does not answer or does
        not serve the model."""
        try:
            listed = self._request("models", None, timeout=5)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:  # no model list here: ask for one token instead
                self.chat([{"role": "user", "content": "Say OK."}], 0.0, 1, retries=0)
                return
            raise SteerfrontError(f"judge endpoint {self.url}: {_http_error(exc)}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise SteerfrontError(
                f"judge endpoint {self.url} is unreachable ({_reason(exc)}); check --judge-url"
            ) from None
        served = [m.get("id") for m in listed.get("data", []) if isinstance(m, dict)]
        if served and self.model not in served:
            shown = ", ".join(served[:5]) + (", ..." if len(served) > 5 else "")
            raise SteerfrontError(
                f"judge model {self.model!r} is not served at {self.url} (it serves: {shown}); "
                "check --judge-model"
            )

    def chat(
        self,
        messages: list[dict],
        temperature: float,
        max_tokens: int,
        retries: int | None = None,
    ) -> str:
        """The judge's answer to one conversation (retried on transient failures)."""
        body = {
            "model": self.model,
            "messages": messages,
            "temperature": temperature,
            "max_tokens": max_tokens,
        }
        retries = self.retries if retries is None else retries
        for attempt in range(retries + 1):
            try:
                answer = self._request("chat/completions", body, timeout=self.timeout)
                return answer["choices"][0]["message"]["content"] or ""
            except urllib.error.HTTPError as exc:
                if exc.code not in RETRY_STATUS or attempt == retries:
                    raise SteerfrontError(
                        f"judge endpoint {self.url}: {_http_error(exc)}"
                        + (f" after {attempt + 1} tries" if attempt else "")
                    ) from None
                wait_s = _retry_after(exc) or 0.5 * 2**attempt
            except (urllib.error.URLError, OSError) as exc:
                if attempt == retries:
                    raise SteerfrontError(
                        f"judge endpoint {self.url} failed after {attempt + 1} tries "
                        f"({_reason(exc)})"
                    ) from None
                wait_s = 0.5 * 2**attempt
            except (KeyError, IndexError, TypeError, ValueError):
                raise SteerfrontError(
                    f"judge endpoint {self.url}: the answer is not an OpenAI chat completion"
                ) from None
            time.sleep(wait_s)
        raise AssertionError("unreachable")


def _reason(exc: Exception) -> str:
    reason = getattr(exc, "reason", exc)
    if isinstance(reason, socket.timeout | TimeoutError):
        return "timed out"
    return str(getattr(reason, "strerror", None) or reason).splitlines()[0][:200]


def _http_error(exc: urllib.error.HTTPError) -> str:
    try:
        detail = exc.read().decode(errors="replace").strip().splitlines()[0][:200]
    except (OSError, IndexError):
        detail = ""
    return f"HTTP {exc.code} {exc.reason}" + (f": {detail}" if detail else "")


def _retry_after(exc: urllib.error.HTTPError) -> float | None:
    try:
        return min(30.0, float(exc.headers.get("Retry-After", "")))
    except (TypeError, ValueError):
        return None


class AnswerCache:
    """Judge answers on disk, one row per (rubric, concept, question, prompt, generation,
    model)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False)
        self._db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, answer TEXT)")
        self._db.commit()

    @staticmethod
    def key(
        rubric: Rubric, concept: str, question: str, prompt: str, generation: str, model: str
    ) -> str:
        """The rubric as asked (its text and the concept it names), the pair, the model."""
        text = json.dumps([rubric.text, concept, question, prompt, generation, model])
        return hashlib.sha256(text.encode()).hexdigest()

    def get(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT answer FROM answers WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def put(self, key: str, answer: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?)", (key, answer))
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def close(self) -> None:
        self._db.close()


class LLMJudge:
    """Scores (prompt, generation) pairs by asking a judge model each rubric question."""

    def __init__(
        self, rubric: Rubric, endpoint: Endpoint, cache: AnswerCache, concept: str
    ) -> None:
        self.rubric, self.endpoint, self.cache, self.concept = rubric, endpoint, cache, concept
        self.asked = 0  # requests answered in this process (cached answers are not asked)
        self._count = threading.Lock()

    @property
    def name(self) -> str:
        return f"llm:{self.rubric.name}:{self.endpoint.model}"

    def score(self, pairs: list[tuple[str, str]]) -> list[dict]:
        """Per pair: each rubric score (None where the answer had no rating) and the answer
        itself (`<score>_answer`). Answers already cached are not asked again; on a failure
        the answers so far stay in the cache and one line says how to go on."""
        questions = list(self.rubric.questions)
        jobs = {}
        for i, (prompt, generation) in enumerate(pairs):
            for q in questions:
                key = AnswerCache.key(
                    self.rubric, self.concept, q, prompt, generation, self.endpoint.model
                )
                jobs[i, q] = key, prompt, generation
        answers = {job: self.cache.get(key) for job, (key, *_) in jobs.items()}
        missing = [job for job, answer in answers.items() if answer is None]
        if missing:
            self._ask(missing, jobs, answers)
        out = []
        for i in range(len(pairs)):
            ratings = {q: self.rubric.rating(answers[i, q]) for q in questions}
            row = {**ratings, **{f"{q}_answer": answers[i, q] for q in questions}}
            if self.rubric.combine:
                row[self.rubric.combine] = self.rubric.combined(ratings)
            out.append(row)
        return out

    def _ask(self, missing: list, jobs: dict, answers: dict) -> None:
        def ask(job: tuple[int, str]) -> None:
            key, prompt, generation = jobs[job]
            messages = self.rubric.messages(job[1], prompt, generation, self.concept)
            answer = self.endpoint.chat(messages, self.rubric.temperature, self.rubric.max_tokens)
            self.cache.put(key, answer)
            answers[job] = answer
            with self._count:
                self.asked += 1

        with ThreadPoolExecutor(max_workers=self.endpoint.concurrency) as pool:
            futures = [pool.submit(ask, job) for job in missing]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = next((f.exception() for f in done if f.exception() is not None), None)
            if failed is not None:
                for future in futures:
                    future.cancel()
        if failed is not None:
            if not isinstance(failed, SteerfrontError):
                raise failed
            left = sum(1 for job in missing if answers[job] is None)
            raise SteerfrontError(
                f"{str(failed).splitlines()[0]}; {len(missing) - left} new answers kept in "
                f"{self.cache.path}, {left} still to ask: run the same command again to go on"
            ) from None
