"""The one error root. Raised with an actionable one-line message, caught once in main."""

from __future__ import annotations

# Exit codes, documented in the README: 0 done, 1 a milestone failed or was
# blocked (state saved, re-run resumes), 2 usage or config error, 3 internal
# error, 130 interrupted.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130


class OrchestratorError(Exception):
    """A problem the user can act on; the message says what and how to fix it."""

    exit_code = EXIT_FAILED


class UsageError(OrchestratorError):
    """Bad command line, config or plan: nothing was started, nothing written."""

    exit_code = EXIT_USAGE


class Interrupted(OrchestratorError):  # noqa: N818 - reads better at the raise site
    exit_code = EXIT_INTERRUPTED
