"""A storage request's failure as words for a message: the service's (or SDK's) own text, what kind of
failure it was, and every secret masked.

``service_error`` walks an exception's causes as a traceback shows them (fsspec backends wrap the SDK's
error, which wraps the HTTP answer; a context dropped with ``raise ... from None`` is not quoted) and says
whether the credentials were refused or missing, nothing answered, or something else happened; each caller
adds advice that fits what it was doing (a datastore, a job's input). ``redact`` masks secrets in any text
that may quote them, since an SDK's message can echo a connection string.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any, Literal

from ..errors import DatasetError
from .endpoint import FROM_STORAGE_OPTIONS, EndpointUnreachable
from .endpoint import advice as endpoint_advice

MASK = "***"

# A secret of 8 characters or more is masked wherever it appears, even inside a longer word: real keys are
# far longer (an Azure account key 88 characters, a SAS signature 43+, an AWS secret key 40, its key id 20)
# and may be glued into a URL or a query string. A shorter value is masked only as a whole word (not next to
# a letter or digit): "key" or "host" as a "secret" must not turn "list-type" into "li***t-type" or "host"
# into "ho***t". A value under 4 characters is not masked at all: as a word it is an ordinary one ("a",
# "to", "1" in "HTTP/1.1"), and a secret that short is guessed in a moment, so masking it would hide
# nothing and garble every message.
_ANYWHERE = 8
_AS_WORD = 4

# Failures that are the credentials' fault though no HTTP status says so: botocore found none, or only
# part of a pair (an access key id without its secret), or could not fetch them; azure-core could not sign
# with the key given (not valid base64, say).
_CREDENTIAL_ERRORS = {"NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError",
                      "ClientAuthenticationError", "AzureSigningError"}

Kind = Literal["credentials", "endpoint", "service"]

# Fields of an Azure connection string that are not credentials (with every ``*Endpoint``): what
# ``_datastore_blob`` keeps in the catalog, and what a user must see to check an account or an endpoint.
_PUBLIC_FIELDS = ("accountname", "defaultendpointsprotocol", "endpointsuffix")

# Names of storage options (adlfs, s3fs, botocore) whose values are credentials: masked in messages. The
# others (an endpoint, a region, an account name) stay readable: they are what the user must check.
_SECRET_NAMES = ("key", "secret", "token", "password", "credential", "connection_string", "sig")

# Where a job's credentials go, by protocol: what the advice after a refused listing shows.
_WHERE = {
    "az": ("storage_options: {az: {account_name: ..., account_key: ...}} (or {az: {connection_string: ...}})",
           "AZURE_STORAGE_CONNECTION_STRING"),
    "s3": ("storage_options: {s3: {key: ..., secret: ..., endpoint_url: ...}}",
           "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
}
_WHERE.update(abfs=_WHERE["az"], abfss=_WHERE["az"], s3a=_WHERE["s3"])


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret (and each ``;``/``&``-separated part of a long one) replaced by ``***``;
    see ``_ANYWHERE`` for which values are masked where."""
    anywhere: set[str] = set()
    words: set[str] = set()
    for s in secrets:
        if not s or not isinstance(s, str):
            continue
        if len(s) >= _ANYWHERE:
            anywhere.add(s)
        elif len(s) >= _AS_WORD:
            words.add(s)
        # A connection string or SAS token may be echoed in pieces (AccountKey=..., sig=...). Its public
        # fields stay readable: the account name and the endpoints are what a message asks the user to check.
        for piece in s.replace("&", ";").split(";"):
            name, sep, value = piece.partition("=")
            if sep and _is_public_field(name):
                continue
            value = value if sep else piece
            if len(value) >= _ANYWHERE:
                anywhere.add(value)
    for p in sorted(anywhere, key=len, reverse=True):
        text = text.replace(p, MASK)
    for w in sorted(words, key=len, reverse=True):
        text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(w)}(?![A-Za-z0-9])", MASK, text)
    return text


def _is_public_field(name: str) -> bool:
    """Whether a connection string's field names something public (``AccountName``, ``BlobEndpoint``,
    ``EndpointSuffix``, ``DefaultEndpointsProtocol``), not a credential (``AccountKey``,
    ``SharedAccessSignature``); an unknown field counts as a credential."""
    name = name.strip().lower()
    return name in _PUBLIC_FIELDS or name.endswith("endpoint")


def service_error(e: BaseException) -> tuple[str, Kind]:
    """The storage service's own message for a failed request (up to three links of the cause chain, as a
    traceback shows it: ``_next_link``) and its kind: ``credentials`` (refused with 401/403, or none found),
    ``endpoint`` (nothing answered), or ``service`` (anything else: the message says what)."""
    parts: list[str] = []
    status = None
    credentials = False
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen and len(seen) < 10:
        seen.add(id(cur))
        msg = str(getattr(cur, "message", "") or cur).strip()
        first = msg.splitlines()[0] if msg else type(cur).__name__
        if first and first not in parts:
            # An SDK's class name says what failed (ClientAuthenticationError); our probe's words say it all.
            named = not parts and not isinstance(cur, EndpointUnreachable)
            parts.append(f"{type(cur).__name__}: {first}" if named else first)
        status = status or _status_of(cur)
        credentials = credentials or type(cur).__name__ in _CREDENTIAL_ERRORS
        cur = _next_link(cur)
    text = " <- ".join(parts[:3]).rstrip(".")  # every caller goes on with ". ", and Azure's text ends with one
    if credentials or status in (401, 403):
        return text, "credentials"
    if isinstance(e, (ConnectionError, TimeoutError)) or "connect" in text.lower() and status is None:
        return text, "endpoint"
    return text, "service"


def _next_link(e: BaseException) -> BaseException | None:
    """The exception ``e`` came from, as a traceback shows it: its ``__cause__`` (``raise ... from``), else its
    ``__context__`` unless the code suppressed it (``raise ... from None``: the one raising it judged it noise,
    such as the ``ConnectionRefusedError`` behind ``EndpointUnreachable``)."""
    if e.__cause__ is not None:
        return e.__cause__
    return None if e.__suppress_context__ else e.__context__


def _status_of(e: BaseException) -> int | None:
    """The HTTP status of an SDK's error: azure-core's ``status_code``, ``response.status_code``, or
    botocore's ``response["ResponseMetadata"]["HTTPStatusCode"]`` (a dict there)."""
    status = getattr(e, "status_code", None)
    response = getattr(e, "response", None)
    if status is None and isinstance(response, dict):
        status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    elif status is None:
        status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def option_secrets(options: Any) -> Iterator[str]:
    """The credentials among storage options (keyed by protocol, or a filesystem's own; nested
    ``client_kwargs`` too): every string value under a name such as ``account_key`` or ``secret``."""
    if not isinstance(options, dict):
        return
    for name, value in options.items():
        if isinstance(value, dict):
            yield from option_secrets(value)
        elif isinstance(value, str) and any(s in str(name).lower() for s in _SECRET_NAMES):
            yield value


def listing_error(url: str, e: BaseException, storage_options: dict[str, Any] | None) -> DatasetError:
    """A job's input ``url`` could not be listed (``e``, from its storage backend): the service's words, its
    credentials masked, and what to check for that kind of failure."""
    text, kind = service_error(e)
    text = redact(text, option_secrets(storage_options))
    if kind == "credentials":
        example, variables = _WHERE.get(url.split("://", 1)[0].lower(), ("storage_options", "its variables"))
        advice = (f"The storage service refused the credentials, or none were found: give them in the job spec "
                  f"({example}) or in the backend's environment variables ({variables}).")
    elif kind == "endpoint":
        advice = endpoint_advice(FROM_STORAGE_OPTIONS)
    else:
        advice = ("That is the storage service's own answer: check the path, that the container or bucket "
                  "exists, and that the credentials may list it.")
    return DatasetError(f"cannot list the input {url}: {text}. Nothing was run. {advice}")
