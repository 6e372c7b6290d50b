"""Errors a user can cause. The CLI prints them in one line and exits with code 2."""


class LeptonError(Exception):
    """Base of every error caused by input, configuration or stored state."""


class NotFoundError(LeptonError):
    """A model, version, run or file that does not exist."""


class InvalidInputError(LeptonError, ValueError):
    """An argument that is malformed or out of range."""


class IntegrityError(LeptonError):
    """Stored data that no longer matches what was recorded (e.g. a sha256 mismatch)."""


def one_line(e: BaseException, limit: int = 300) -> str:
    """Return the first non-empty line of an exception's message (its type name when it has none)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return (lines[0] if lines else type(e).__name__)[:limit]
