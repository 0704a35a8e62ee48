"""Where a vault's objects live: a local directory, or a bucket and prefix on S3-compatible storage.

An S3 vault keeps its objects (config, key file, manifests, packs, index) in the bucket, and what is this host's
alone in a small local directory: the catalog (an index that ``vault rebuild-catalog`` rebuilds from the manifests),
flock locks between this host's processes, and pins. ``--vault s3://BUCKET/PREFIX`` resolves to that directory
(``$CUTPOINT_STATE/s3/<id>``, private), whose ``remote.json`` names the bucket, prefix and endpoint; every other
part of cutpoint (child processes, the service, the API) keeps passing a vault *root* path, and ``backend_for``
turns it into the right storage. The endpoint comes from ``--s3-endpoint`` or ``CUTPOINT_S3_ENDPOINT``;
credentials, region and CA bundle the way the AWS tools read them (boto3's chain).

An address may carry its own endpoint and AWS profile, ``s3://BUCKET/PREFIX?endpoint=URL&profile=NAME`` (as Arrow's
S3 URIs carry ``endpoint_override``), because one command can name two vaults on two services with two sets of
credentials (``copy``, a policy's ``copy.to``); an explicit profile is used instead of the AWS_* variables, as the
AWS tools do. Both are part of how this host reaches the vault, so they are kept in ``remote.json`` for the child
processes and the service that open it by its root.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import urllib.parse
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import UsageError, VaultError
from ..paths import state_home
from .backend import Backend, LocalBackend
from .fsutil import write_atomic

REMOTE = "remote.json"
SCHEME = "s3://"
# S3 bucket names: 3-63 of lower-case letters, digits, '.', '-'; prefix parts as the backend's object names
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_PREFIX = re.compile(r"(?:[a-z0-9_][a-z0-9._-]{0,99})(?:/[a-z0-9_][a-z0-9._-]{0,99}){0,7}")
_PROFILE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+@-]{0,63}")       # an AWS profile name, as a config section
# printable ASCII only, and no user:password@ in the authority (it would be kept in remote.json and echoed in errors)
_ENDPOINT = re.compile(r"https?://[!$&-.0-9:;=A-Z_a-z~\[\]]+(?:/[!-\"$->@-~]*)?")
PARAMS = ("endpoint", "profile")


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str
    endpoint: str | None
    profile: str | None = None          # the AWS profile whose credentials and region reach it; None: AWS's chain

    @property
    def url(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.prefix}" if self.prefix else f"{SCHEME}{self.bucket}"

    @property
    def address(self) -> str:
        """The address that reaches it again from any shell: with its endpoint and profile, quoted for a command
        line (hints that say "run cutpoint ... VAULT" must not send the user to the default service)."""
        query = "&".join(f"{k}={urllib.parse.quote(v, safe=':/')}" for k, v in
                         (("endpoint", self.endpoint), ("profile", self.profile)) if v)
        return shlex.quote(f"{self.url}?{query}" if query else self.url)


def is_remote(spec: str | os.PathLike[str]) -> bool:
    return str(spec).startswith(SCHEME)


def parse(url: str, endpoint: str | None = None, profile: str | None = None) -> S3Location:
    """``s3://BUCKET[/PREFIX][?endpoint=URL&profile=NAME]`` checked strictly (the prefix becomes part of every
    object key). The address's own endpoint and profile win over ``endpoint`` and ``profile`` (the command's
    ``--s3-endpoint``, else ``CUTPOINT_S3_ENDPOINT``)."""
    rest = url[len(SCHEME):] if url.startswith(SCHEME) else ""
    rest, _, query = rest.partition("?")
    bucket, _, prefix = rest.partition("/")
    prefix = prefix.strip("/")
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise UsageError(f"{url!r} is not a valid S3 vault address: give s3://BUCKET/PREFIX with a bucket name of "
                         "3-63 lower-case letters, digits, '.' and '-'")
    if prefix and (not _PREFIX.fullmatch(prefix) or any(p in (".", "..") for p in prefix.split("/"))):
        raise UsageError(f"{url!r} is not a valid S3 vault address: its prefix may hold lower-case letters, "
                         "digits, '.', '_', '-' and '/' between parts")
    params = _params(url, query)
    if "endpoint" in params:
        endpoint = params["endpoint"]
    endpoint = os.environ.get("CUTPOINT_S3_ENDPOINT") if endpoint is None else endpoint
    endpoint = endpoint or None
    if endpoint is not None and not _ENDPOINT.fullmatch(endpoint):
        raise UsageError(f"S3 endpoint {endpoint!r} is not an http(s) URL of printable characters without "
                         "user:password@ (credentials belong in ~/.aws/credentials or AWS_*); pass --s3-endpoint "
                         "URL, set CUTPOINT_S3_ENDPOINT, or give s3://BUCKET/PREFIX?endpoint=URL")
    if "profile" in params:
        profile = params["profile"]
    profile = profile or None           # none: botocore's own chain, AWS_PROFILE included
    if profile is not None and not _PROFILE.fullmatch(profile):
        raise UsageError(f"AWS profile {profile!r} is not a profile name (letters, digits, '_', '.', '+', '@', "
                         "'-'); name a section of ~/.aws/credentials or ~/.aws/config")
    return S3Location(bucket, prefix, endpoint, profile)


def _params(url: str, query: str) -> dict[str, str]:
    """An address's query: only ``endpoint`` and ``profile``, each once, percent-decoded."""
    out: dict[str, str] = {}
    if not query:
        return out
    for part in query.split("&"):
        key, eq, value = part.partition("=")
        if key not in PARAMS or not eq or not value or key in out:
            raise UsageError(f"{url!r} is not a valid S3 vault address: after '?' it takes endpoint=URL and "
                             "profile=NAME, each once, joined by '&'")
        out[key] = urllib.parse.unquote(value)
    return out


def local_root(loc: S3Location) -> Path:
    """This host's directory for the S3 vault at ``loc`` (created private, with its ``remote.json``)."""
    ident: list[str | None] = [loc.endpoint, loc.bucket, loc.prefix]
    if loc.profile is not None:         # with other credentials it is reached otherwise (roots made before: no profile)
        ident.append(loc.profile)
    key = hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:24]
    root = state_home() / "s3" / f"{loc.bucket}-{key}"
    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(root, 0o700)
        path = root / REMOTE
        doc = asdict(loc)
        if not path.exists() or json.loads(path.read_text()) != doc:
            write_atomic(path, json.dumps(doc, indent=1).encode())
    except (OSError, ValueError) as exc:
        raise VaultError(f"cannot prepare this host's directory {root} for vault {loc.url}: {exc}; set "
                         "CUTPOINT_STATE to a writable directory") from exc
    return root


def resolve(spec: str | os.PathLike[str], endpoint: str | None = None, profile: str | None = None) -> Path:
    """A ``--vault`` value as the vault root cutpoint passes around: a directory, or an S3 vault's local one."""
    if is_remote(spec):
        return local_root(parse(str(spec), endpoint, profile))
    return Path(spec).expanduser()


def remote_of(root: Path) -> S3Location | None:
    """The S3 location a vault root stands for, or None for a local vault. ``remote.json`` is this host's own
    file (state directory, 0700), but is still parsed strictly."""
    path = root / REMOTE
    try:
        doc = json.loads(path.read_text())
    except (FileNotFoundError, NotADirectoryError):
        return None                     # a local vault (or none there: opening it says so)
    except (OSError, ValueError) as exc:
        raise VaultError(f"{path} is unreadable ({exc}); remove it and give --vault s3://BUCKET/PREFIX again") \
            from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("bucket"), str) or \
            not isinstance(doc.get("prefix"), str) or not isinstance(doc.get("endpoint"), (str, type(None))) or \
            not isinstance(doc.get("profile"), (str, type(None))):
        raise VaultError(f"{path} is damaged; remove it and give --vault s3://BUCKET/PREFIX again")
    url = f"{SCHEME}{doc['bucket']}/{doc['prefix']}".rstrip("/")
    try:
        return parse(url, doc["endpoint"] or "", doc.get("profile") or "")
    except UsageError as exc:
        raise VaultError(f"{path} is damaged ({exc}); remove it and give --vault s3://BUCKET/PREFIX again") from exc


def describe(root: Path) -> str:
    """How to name the vault at ``root`` to a user: its S3 address, or its directory."""
    loc = remote_of(root)
    return loc.url if loc is not None else str(root)


def address_of(root: Path) -> str:
    """How to give the vault at ``root`` on a command line: its full S3 address (``S3Location.address``), or its
    directory, quoted."""
    loc = remote_of(root)
    return loc.address if loc is not None else shlex.quote(str(root))


def retention_of(config: dict[str, object]) -> object | None:
    """The Object Lock retention every write of an S3 vault carries (docs/format.md §20.5), or None."""
    mode, days = config.get("object_lock"), config.get("immutable_days")
    if not isinstance(mode, str) or not isinstance(days, int) or days <= 0:
        return None
    from .s3backend import Retention
    return Retention(mode.upper(), days)


def backend_for(root: Path, retention: object | None = None) -> Backend:
    """The storage of the vault at ``root``. ``retention``: an ``s3backend.Retention`` for every write."""
    loc = remote_of(root)
    if loc is None:
        return LocalBackend(root)
    from .s3backend import Retention, S3Backend      # boto3 is imported only for S3 vaults
    assert retention is None or isinstance(retention, Retention)
    return S3Backend(loc.bucket, loc.prefix, loc.endpoint, retention=retention, profile=loc.profile)
