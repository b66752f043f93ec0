"""Judges of generated text: each scores (prompt, generation) pairs and returns named scores.

`local` (`local.py`) measures with the unsteered model itself and a concept probe; `llm`
(`llm.py`) asks an OpenAI-compatible chat endpoint the questions of a rubric (`rubrics.py`).
"""

JUDGES = ("local", "llm")
