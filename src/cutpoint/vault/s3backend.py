"""The Backend interface on S3-compatible object storage (boto3's botocore).

boto3 because its clients are thread-safe (parallel ranged GETs share one client) and it reads credentials, region
and CA bundle exactly as the AWS tools do (AWS_* variables, ~/.aws/credentials, AWS_CA_BUNDLE). Only the low-level
client is used, so it is made with botocore's session directly (boto3's session adds resources and transfer helpers
and 0.08 s of imports), and every backend shares one loader of botocore's service models: loading the S3 model cost
0.05-0.1 s per client, and opening an S3 vault makes two. Credentials are still resolved anew for each backend.
The endpoint comes from the caller or ``CUTPOINT_S3_ENDPOINT``. Errors are matched by HTTP status and S3 error code,
never text.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import botocore.config
import botocore.exceptions
import botocore.session

from ..errors import CutpointError, NotFoundError, RetentionError, StorageAuthError, VaultError
from .backend import ObjectInfo, check_name

_AUTH_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "ExpiredToken"}
_loader_lock = threading.Lock()
_loader: Any = None             # botocore's loader of service models, shared by every backend of this process


def _session(profile: str | None = None) -> Any:
    """A fresh botocore session (its own credential chain and config) with the process's shared model loader.
    ``profile``: that profile's credentials and region; as with the AWS tools, an explicit profile is used instead
    of the AWS_* credential variables."""
    global _loader
    session = botocore.session.Session(profile=profile)
    with _loader_lock:
        if _loader is None:
            _loader = session.get_component("data_loader")
        else:
            session.register_component("data_loader", _loader)
    return session


_NO_LOCK = {"ObjectLockConfigurationNotFoundError", "NoSuchObjectLockConfiguration", "InvalidRequest",
            "NoSuchKey", "NoSuchVersion", "NotImplemented"}


def _no_lock(e: botocore.exceptions.ClientError) -> bool:
    """The store's answer for a version without retention or legal hold (codes differ between stores), or for one
    gone meanwhile, or from a store without Object Lock at all."""
    status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
    return str(e.response.get("Error", {}).get("Code", "")) in _NO_LOCK or status in (404, 501)


@dataclass(frozen=True)
class Retention:
    mode: str               # "COMPLIANCE" or "GOVERNANCE"
    days: int


class _ViewFile(io.RawIOBase):
    """A seekable file over a buffer, so that a 16 MiB pack is sent from the pack buffer itself: ``bytes(view)``
    would allocate and fill 16 MiB of fresh memory per PUT (slow here: docs/performance.md), and boto3 takes no
    memoryview. botocore reads it to sign and to send, and seeks back to retry."""

    def __init__(self, data: bytes | memoryview) -> None:
        self.view = memoryview(data).cast("B")
        self.pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = max(0, min(len(b), len(self.view) - self.pos))
        b[:n] = self.view[self.pos:self.pos + n]
        self.pos += n
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: len(self.view)}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def tell(self) -> int:
        return self.pos


class S3Backend:
    """Objects under ``prefix`` in ``bucket``. With ``retention``, every write carries a retain-until date."""

    def __init__(self, bucket: str, prefix: str = "", endpoint: str | None = None,
                 retention: Retention | None = None, timeout: float = 10.0,
                 unretained: tuple[str, ...] = ("locks/",), profile: str | None = None) -> None:
        """``unretained``: name prefixes written without retention (lock objects must be deletable on release).
        ``profile``: the AWS profile (of ~/.aws/credentials and ~/.aws/config) to reach it with."""
        if retention is not None and retention.mode not in ("COMPLIANCE", "GOVERNANCE"):
            raise VaultError(f"object lock mode {retention.mode!r} is not COMPLIANCE or GOVERNANCE")
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.endpoint = endpoint or os.environ.get("CUTPOINT_S3_ENDPOINT") or None
        self.retention = retention
        self.unretained = unretained
        # No CRC32 of every body (botocore's default since 1.36): a pack's blobs carry their own checks (AEAD or
        # keyed ids, verify), the payload is signed over HTTP and inside TLS over HTTPS, and the extra pass cost
        # 0.15 CPU-s per 320 MiB of PUTs here, on cores the store itself needs; several S3-compatible stores also
        # reject the new checksum headers. Object Lock writes still send one (``_lock_args``): S3 requires it.
        cfg = botocore.config.Config(
            signature_version="s3v4", s3={"addressing_style": "path"}, connect_timeout=timeout,
            read_timeout=timeout, retries={"max_attempts": 3, "mode": "standard"}, max_pool_connections=32,
            request_checksum_calculation="when_required", response_checksum_validation="when_required")
        self.profile = profile
        self._lock_enabled: bool | None = None     # the bucket's Object Lock, asked once (_retained)
        try:
            session = _session(profile)
            region = session.get_config_variable("region") or "us-east-1"
            self.client: Any = session.create_client("s3", endpoint_url=self.endpoint, region_name=region,
                                                     config=cfg)
        except botocore.exceptions.ProfileNotFound as e:
            name, fix = (profile, "drop profile= from the vault's address") if profile else \
                (os.environ.get("AWS_PROFILE"), "unset AWS_PROFILE")
            raise StorageAuthError(f"AWS profile {name!r} for s3://{bucket}/{self.prefix} is in neither "
                                   "~/.aws/credentials nor ~/.aws/config (nor AWS_SHARED_CREDENTIALS_FILE / "
                                   f"AWS_CONFIG_FILE): add it there or {fix}") from e
        self._local = threading.local()         # per-thread "this PutObject is a create": the client is shared
        self.client.meta.events.register("before-sign.s3.PutObject", self._add_if_none_match)

    def _add_if_none_match(self, request: Any, **_: Any) -> None:
        """``If-None-Match: *`` set as a header, so any boto3 version (older ones lack the parameter) sends it."""
        if getattr(self._local, "create", False):
            request.headers["If-None-Match"] = "*"

    def _key(self, name: str) -> str:
        return self.prefix + check_name(name)

    def _where(self) -> str:
        who = f" as AWS profile {self.profile!r}" if self.profile else ""
        return f"s3://{self.bucket}/{self.prefix} at {self.endpoint or 'AWS'}{who}"

    def _error(self, e: Exception, what: str) -> CutpointError:
        if isinstance(e, botocore.exceptions.ClientError):
            code = str(e.response.get("Error", {}).get("Code", ""))
            status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
            if status == 404 or code in ("NoSuchKey", "404", "NotFound"):
                return NotFoundError(f"vault object {what} is missing in {self._where()}")
            if status in (401, 403) or code in _AUTH_CODES:
                return StorageAuthError(f"{self._where()} refused access for {what} ({code}): "
                                        + ("check that profile in ~/.aws/credentials" if self.profile else
                                           "check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or ~/.aws/credentials"))
            return VaultError(f"{self._where()} failed on {what}: {code} (HTTP {status})")
        if isinstance(e, botocore.exceptions.NoCredentialsError):
            return StorageAuthError(f"no S3 credentials for {self._where()}: "
                                    + ("give that profile aws_access_key_id and aws_secret_access_key in "
                                       "~/.aws/credentials" if self.profile else
                                       "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or ~/.aws/credentials"))
        return VaultError(f"cannot reach {self._where()} for {what}: {type(e).__name__}; "
                          "check --s3-endpoint / CUTPOINT_S3_ENDPOINT")

    def _lock_args(self, name: str) -> dict[str, Any]:
        if self.retention is None or name.startswith(self.unretained):
            return {}
        until = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=self.retention.days)
        # S3 refuses a PutObject with Object Lock parameters that carries no Content-MD5 or checksum header
        return {"ObjectLockMode": self.retention.mode, "ObjectLockRetainUntilDate": until, "ChecksumAlgorithm": "CRC32"}

    def put(self, name: str, data: bytes | memoryview) -> None:
        key = self._key(name)
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=_ViewFile(data), **self._lock_args(name))
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
            raise self._error(e, name) from e

    def create(self, name: str, data: bytes | memoryview) -> bool:
        key = self._key(name)
        self._local.create = True
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=_ViewFile(data), **self._lock_args(name))
            return True
        except botocore.exceptions.ClientError as e:
            status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
            if status in (409, 412):            # PreconditionFailed (412); 409 while another create races
                return False
            raise self._error(e, name) from e
        except botocore.exceptions.BotoCoreError as e:
            raise self._error(e, name) from e
        finally:
            self._local.create = False

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        key = self._key(name)
        args: dict[str, Any] = {}
        if length is not None:
            if length <= 0:
                return b""
            args["Range"] = f"bytes={offset}-{offset + length - 1}"
        elif offset:
            args["Range"] = f"bytes={offset}-"
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key, **args)["Body"]
            return bytes(body.read())
        except botocore.exceptions.ClientError as e:
            status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
            if status == 416:                   # range past the end: like pread, nothing
                return b""
            raise self._error(e, name) from e
        except botocore.exceptions.BotoCoreError as e:
            raise self._error(e, name) from e

    def exists(self, name: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(name))
            return True
        except botocore.exceptions.ClientError as e:
            if int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)) == 404:
                return False
            raise self._error(e, name) from e
        except botocore.exceptions.BotoCoreError as e:
            raise self._error(e, name) from e

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix + prefix)
            for page in pages:
                for obj in page.get("Contents", []):
                    name = str(obj["Key"])[len(self.prefix):]
                    try:
                        check_name(name)
                    except VaultError:
                        continue            # planted or foreign key: never becomes a name
                    yield ObjectInfo(name, int(obj["Size"]), obj["LastModified"].timestamp())
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
            raise self._error(e, f"listing {prefix!r}") from e

    def delete(self, name: str) -> None:
        """Remove ``name`` with every version (a versioned bucket would otherwise keep them); a version under
        retention raises ``RetentionError``."""
        key = self._key(name)
        try:
            versions = self.client.list_object_versions(Bucket=self.bucket, Prefix=key)
            ids = [v["VersionId"] for v in versions.get("Versions", []) + versions.get("DeleteMarkers", [])
                   if v["Key"] == key]
            if not ids:
                self.client.delete_object(Bucket=self.bucket, Key=key)
            for vid in ids:
                self.client.delete_object(Bucket=self.bucket, Key=key, VersionId=vid)
        except botocore.exceptions.ClientError as e:
            err = self._error(e, name)
            if isinstance(err, StorageAuthError) and self._held_quietly(key):    # 403 on a version under lock
                raise RetentionError(f"vault object {name} in {self._where()} is under Object Lock retention "
                                     "(or a legal hold) and cannot be deleted before its retain-until date") from e
            if isinstance(err, NotFoundError):
                return
            raise err from e
        except botocore.exceptions.BotoCoreError as e:
            raise self._error(e, name) from e

    def _held_quietly(self, key: str) -> bool:
        """Why a delete was refused: under retention, or (when even that cannot be asked) the refusal itself."""
        try:
            return self._retained(key)
        except CutpointError:
            return False

    def stat(self, name: str) -> ObjectInfo:
        try:
            r = self.client.head_object(Bucket=self.bucket, Key=self._key(name))
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
            raise self._error(e, name) from e
        return ObjectInfo(name, int(r["ContentLength"]), r["LastModified"].timestamp())

    def retained(self, name: str) -> bool:
        """Whether the store would refuse to delete ``name`` now: a version of it (a delete removes them all) has a
        retain-until date still ahead, or a legal hold."""
        return self._retained(self._key(name))

    def _retained(self, key: str) -> bool:
        """A store keeps reporting a retain-until date once it has passed, so the date is compared with now; a newer
        version without retention (a bucket writer's) must not hide an older one under it; and a question the store
        cannot answer is an error, never "not retained" (gc would free what the store still keeps listed)."""
        if self._lock_enabled is None:
            try:
                self._lock_enabled = self.object_lock_enabled()
            except CutpointError:
                self._lock_enabled = True       # unknown (no permission to ask): look at the versions themselves
        if not self._lock_enabled:
            return False                        # a bucket without Object Lock retains nothing
        now = dt.datetime.now(dt.timezone.utc)
        try:
            pages = self.client.get_paginator("list_object_versions").paginate(Bucket=self.bucket, Prefix=key)
            for page in pages:
                for ver in page.get("Versions", []):
                    if ver.get("Key") == key and self._version_held(key, ver.get("VersionId"), now):
                        return True
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
            raise self._error(e, f"the retention of {key[len(self.prefix):]}") from e
        return False

    def _version_held(self, key: str, vid: str | None, now: dt.datetime) -> bool:
        kw = {"VersionId": vid} if vid not in (None, "null") else {}
        try:
            until = self.client.get_object_retention(Bucket=self.bucket, Key=key, **kw) \
                .get("Retention", {}).get("RetainUntilDate")
        except botocore.exceptions.ClientError as e:
            if not _no_lock(e):
                raise
            until = None
        if isinstance(until, dt.datetime):
            if until.tzinfo is None:
                until = until.replace(tzinfo=dt.timezone.utc)
            if until > now:
                return True
        try:
            hold = self.client.get_object_legal_hold(Bucket=self.bucket, Key=key, **kw)
        except botocore.exceptions.ClientError as e:
            if not _no_lock(e):
                raise
            return False
        return bool(hold.get("LegalHold", {}).get("Status") == "ON")

    def object_lock_enabled(self) -> bool:
        try:
            r = self.client.get_object_lock_configuration(Bucket=self.bucket)
        except botocore.exceptions.ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            if code in ("ObjectLockConfigurationNotFoundError", "NoSuchObjectLockConfiguration") or \
                    int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)) == 404:
                return False
            raise self._error(e, "the bucket's Object Lock configuration") from e
        except botocore.exceptions.BotoCoreError as e:
            raise self._error(e, "the bucket's Object Lock configuration") from e
        return r.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled"

    def extend_retention(self, name: str, days: int) -> None:
        """Move ``name``'s retain-until date to at least ``days`` from now (a store refuses shortening)."""
        if self.retention is None:
            raise VaultError(f"{self._where()} has no Object Lock retention configured")
        until = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=days)
        try:
            self.client.put_object_retention(Bucket=self.bucket, Key=self._key(name), Retention={
                "Mode": self.retention.mode, "RetainUntilDate": until})
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
            raise self._error(e, name) from e

    def sync(self) -> None:
        """Nothing to do: S3 acknowledges a PUT only once it is durable."""
