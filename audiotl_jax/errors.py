"""The one exception type for user mistakes.

Anything a user can fix (a missing file, a bad CSV row, an unknown name, a wrong config key) raises
`UserError` with a message that names the file, row or key and says what was expected. `main.py`
prints it without a traceback; everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
  """A problem with the user's input, configuration or files."""


def unknown_name(kind: str, name: str, known) -> UserError:
  """The error for a registry lookup miss: it lists what exists."""
  known = sorted(known)
  return UserError(f"unknown {kind} {name!r}; known: {', '.join(known)}")
