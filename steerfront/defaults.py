"""Defaults that users see, kept in one place (the CLI, the README and the code read them here)."""

DEFAULT_MODEL = "smollm2-135m-instruct"
DEFAULT_CONCEPT = "agreeableness"
