"""Is a failure worth retrying? One answer for every step, from the exception itself.

A *permanent* error fails the same way on every try: a table or column that does not exist, a
password the database refuses, a role without the privilege, a read-only or forbidden folder, a
training window with one label class, a model version whose files are gone, an invalid spec or a
missing setting. Retrying it only delays the alert by the retries' back-off. A *transient* one may
pass on the next try: a connection refused or reset, a lock or statement timeout, a serialization
failure or deadlock, an MLflow server answering 5xx or not at all. Anything not known to be
permanent is treated as transient (retried, as before this module existed).

The chain Python prints is walked (``__cause__``, else an unsuppressed ``__context__``), because
the pipeline wraps driver errors to name what failed (the connection id, the model version): the
wrapper says what, the cause says whether it lasts. A transient link anywhere wins (a retry is
only slower when wrong; skipping one loses a night when wrong) and the innermost one gives the
reason; else the outermost permanent link decides (the wrapper that names the thing). Types are
matched by their class (psycopg's SQLSTATE, OSError's errno, MLflow's error code) and the
pipeline's own error classes by qualified name, so this module imports neither the drivers nor
the rest of the core: it is safe to call on any exception, including an ImportError. A stored
snapshot that cannot be read (SnapshotReadError) is not listed: a retry takes the snapshot again.

Pure: no Airflow import. plugins/nightshift_airflow/base.py applies it to every step.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

# The pipeline's own errors that no retry can change (qualified class names; subclasses count too).
PERMANENT_TYPES = {
    "include.nightshift.spec.SpecError": "the dataset spec is invalid",
    "include.nightshift.snapshot.SourceSchemaError": "the source table lacks a column the spec needs",
    "include.nightshift.nightly.NotEnoughRows": "the training window has too few labelled rows (or one label class)",
    "include.nightshift.nightly.NoModel": "there is no champion model",
    "include.nightshift.registry.RollbackRefused": "the rollback was refused",
    "include.nightshift.registry.ModelArtifactsMissing": "model files are missing from the artifact store",
    "include.nightshift.history.RunRefused": "the run would rewrite history without being asked to",
    "include.nightshift.skew.ServingSkew": "the serving path does not reproduce training",
}

# SQLSTATE (PostgreSQL's error code, as psycopg and ADBC report it): an exact code or a class prefix.
PERMANENT_SQLSTATES = {
    "42P01": "the table does not exist", "42703": "the column does not exist",
    "42501": "the role lacks the privilege", "42": "the SQL is invalid for this database",
    "28P01": "the database refused the password", "28": "the database refused the login",
    "3D000": "the database does not exist", "3F000": "the schema does not exist",
    "25006": "the database session is read-only",
}
TRANSIENT_SQLSTATES = {
    "08": "the database connection failed", "40001": "serialization failure", "40P01": "deadlock",
    "55P03": "lock timeout", "57014": "statement timeout or cancelled query", "57P01": "the server shut down",
    "57P02": "the server crashed", "57P03": "the server is not accepting connections yet",
    "53": "the server is out of resources",
}
# What libpq says when a login is refused before any SQLSTATE exists (psycopg.OperationalError).
PERMANENT_LOGIN_WORDS = {
    "password authentication failed": "the database refused the password",
    "no password supplied": "the database requires a password and none is configured",
    "does not exist": "the database or role named by the connection does not exist",
    "pg_hba.conf rejects connection": "the database does not allow this login (pg_hba.conf)",
}
PERMANENT_ERRNOS = {errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
                    errno.EPERM: "operation not permitted"}
# MLflow error codes a retry cannot change (4xx); 5xx, 429 and conflicts are transient.
PERMANENT_MLFLOW_CODES = {
    "RESOURCE_DOES_NOT_EXIST": "MLflow has no such resource", "PERMISSION_DENIED": "MLflow denied the request",
    "UNAUTHENTICATED": "MLflow refused the credentials", "INVALID_PARAMETER_VALUE": "MLflow rejected the request",
    "BAD_REQUEST": "MLflow rejected the request", "ENDPOINT_NOT_FOUND": "the MLflow URL has no such endpoint",
}
TRANSIENT_NETWORK_TYPES = ("ConnectionError", "Timeout", "ProtocolError", "ChunkedEncodingError",
                           "NewConnectionError", "MaxRetryError", "ReadTimeoutError", "RemoteDisconnected")


@dataclass(frozen=True)
class Diagnosis:
    """permanent: fail at once, no retry; reason: why, in a few words; kind: the deciding link's class."""

    permanent: bool
    reason: str
    kind: str

    def note(self) -> str:
        return f"permanent ({self.reason}): not retried" if self.permanent else f"transient ({self.reason})"


def chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and its causes, outermost first, as Python's traceback shows them (no cycles)."""
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        yield link
        link = link.__cause__ if link.__cause__ is not None else (
            None if link.__suppress_context__ else link.__context__)


def classify(exc: BaseException, permanent: Mapping[type[BaseException], str] | None = None) -> Diagnosis:
    """Permanent or transient, with the reason. `permanent`: more classes to treat as permanent, each
    with its reason (the Airflow layer's own, e.g. a missing setting), which this core cannot import."""
    found = [(link, judge(link, permanent)) for link in chain(exc)]
    for link, verdict in reversed(found):  # the innermost transient link says best what happened
        if verdict is not None and not verdict[0]:
            return Diagnosis(False, verdict[1], type(link).__name__)
    for link, verdict in found:
        if verdict is not None:
            return Diagnosis(True, verdict[1], type(link).__name__)
    return Diagnosis(False, "not known to be permanent: retried", type(exc).__name__)


def judge(link: BaseException, permanent: Mapping[type[BaseException], str] | None = None) -> tuple[bool, str] | None:
    """(permanent?, reason) for one exception on its own, or None when it does not tell."""
    for cls, reason in (permanent or {}).items():
        if isinstance(link, cls):
            return True, reason
    for judge_one in (_pipeline, _sqlstate, _login, _mlflow, _network, _os_error):
        verdict = judge_one(link)
        if verdict is not None:
            return verdict
    return None


def describe(exc: BaseException, diagnosis: Diagnosis, *, named: bool = True, limit: int = 2000) -> str:
    """One line of text for the run record and the alert: the exception's class (unless not `named`) and
    message, its direct cause's too when the message does not carry it, and whether it was retried."""
    text, cause = _message(exc) if named else _one_line(exc), exc.__cause__
    if cause is not None and _one_line(cause) not in text:
        text += f" (caused by {_message(cause)})"
    return _clip(f"{text} [{diagnosis.note()}]", limit)


# --- the judges, one kind of exception each ---------------------------------------------------


def _pipeline(link: BaseException) -> tuple[bool, str] | None:
    for cls in type(link).__mro__:
        reason = PERMANENT_TYPES.get(f"{cls.__module__}.{cls.__qualname__}")
        if reason:
            return True, reason
    return None


def _sqlstate(link: BaseException) -> tuple[bool, str] | None:
    """psycopg (3: sqlstate, 2: pgcode) and ADBC errors carry PostgreSQL's SQLSTATE."""
    code = getattr(link, "sqlstate", None) or getattr(link, "pgcode", None)
    if not isinstance(code, str) or len(code) != 5:
        return None
    for table, permanent in ((TRANSIENT_SQLSTATES, False), (PERMANENT_SQLSTATES, True)):
        reason = table.get(code) or table.get(code[:2])
        if reason:
            return permanent, f"{reason}, SQLSTATE {code}"
    return None


def _login(link: BaseException) -> tuple[bool, str] | None:
    """A psycopg OperationalError raised while connecting carries no SQLSTATE, only libpq's text."""
    if not (type(link).__module__.startswith("psycopg") and type(link).__name__ == "OperationalError"):
        return None
    text = str(link).lower()
    for words, reason in PERMANENT_LOGIN_WORDS.items():
        if words in text and ("fatal" in text or "connection" in text):
            return True, reason
    return False, "the database could not be reached"


def _mlflow(link: BaseException) -> tuple[bool, str] | None:
    """MlflowException and RestException: their error code, else the HTTP status it maps to."""
    if not type(link).__module__.startswith("mlflow"):
        return None
    code = getattr(link, "error_code", None)
    if code in PERMANENT_MLFLOW_CODES:
        return True, f"{PERMANENT_MLFLOW_CODES[code]} ({code})"
    try:
        status = int(link.get_http_status_code())
    except (AttributeError, TypeError, ValueError):
        return None
    if status >= 500 or status in (408, 409, 429):
        return False, f"MLflow answered {status} ({code})"
    return None


def _network(link: BaseException) -> tuple[bool, str] | None:
    if isinstance(link, (ConnectionError, TimeoutError)):
        return False, f"network: {type(link).__name__}"
    module = type(link).__module__
    if module.startswith(("requests", "urllib3", "http.client")) and type(link).__name__ in TRANSIENT_NETWORK_TYPES:
        return False, f"network: {type(link).__name__}"
    return None


def _os_error(link: BaseException) -> tuple[bool, str] | None:
    if isinstance(link, OSError) and link.errno in PERMANENT_ERRNOS:
        where = f" on {link.filename}" if link.filename else ""
        return True, f"{PERMANENT_ERRNOS[link.errno]}{where}"
    return None


def _one_line(exc: BaseException) -> str:
    """The message on one line; a PostgreSQL error's primary message without the query excerpt psycopg adds."""
    primary = getattr(getattr(exc, "diag", None), "message_primary", None)
    return " ".join(str(primary or exc).split())


def _message(exc: BaseException) -> str:
    text = _one_line(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
