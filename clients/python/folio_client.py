"""A small Python client for Folio, on stubs generated from proto/ (run ./generate.sh first).

    from folio_client import FolioClient, Conflict
    c = FolioClient("127.0.0.1:7070")
    vol = c.create_volume()
    lsn = c.commit(vol, expected_lsn=0, pages={0: b"hello".ljust(4096, b"\\0")}, key="k1")
    lsn, changed = c.pull_changes(vol, since_lsn=0)      # changed: a set of page indexes
    pages = c.read_pages(vol, lsn, [0, 1])               # {index: 4096 bytes}

Secured nodes (TLS with a private CA, bearer tokens):

    c = FolioClient("node1:7070", ca="ca.pem", token_file="admin.token")

or, with no arguments, from the environment the `folio` CLI reads: FOLIO_CA, FOLIO_TOKEN,
FOLIO_TOKEN_FILE. A call the server does not authenticate raises `Unauthenticated`; one the
token's scopes do not cover raises `PermissionDenied`.
"""

import os
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "folio_pb"))

import grpc  # noqa: E402
from pyroaring import BitMap  # noqa: E402

from folio.volume.v1 import volume_pb2 as pb  # noqa: E402
from folio.volume.v1 import volume_pb2_grpc as pb_grpc  # noqa: E402

PAGE_SIZE = 4096
MAX_MESSAGE = 8 * 1024 * 1024


class FolioError(Exception):
    """An error answer from Folio; `details` is the server's message."""

    def __init__(self, message):
        super().__init__(message)
        self.details = message


class Conflict(FolioError):
    """The volume is not at the expected LSN; `current` is where it is."""

    def __init__(self, current, message):
        super().__init__(message)
        self.current = current


class Unauthenticated(FolioError):
    """The server did not accept the call's credentials: no token, or a malformed, expired or
    wrongly signed one (or a token sent without TLS to a node that requires TLS)."""


class PermissionDenied(FolioError):
    """The token is valid but its scopes do not allow this call (e.g. a commit with a read-only
    token)."""


def _error(e, token=None):
    """The FolioError for a failed call, or None to let the grpc.RpcError through."""
    code = e.code()
    failure = getattr(token, "failure", None)
    if failure and code == grpc.StatusCode.UNAVAILABLE:
        # On TLS the token rides on call credentials; gRPC reports a token file that could not
        # be read as UNAVAILABLE ("Getting metadata from plugin failed").
        return FolioError(failure)
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return Unauthenticated(e.details())
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return PermissionDenied(e.details())
    return None


def _env(name):
    v = os.environ.get(name)
    return v if v else None


def _parse_addr(addr):
    """`host:port`, `http://host:port` or `https://host:port` -> (host:port, https?)."""
    for scheme, tls in (("https://", True), ("http://", False)):
        if addr[: len(scheme)].lower() == scheme:
            return addr[len(scheme):].rstrip("/"), tls
    return addr, False


class _TokenFile:
    """The token in a file, read again for every call (a rotated or refreshed token is used
    from the next call on). If the file cannot be read, the last token read is used."""

    def __init__(self, path):
        self.path = path
        self.failure = None  # why the last read failed with no earlier token to fall back on
        self._last = None
        self._lock = threading.Lock()

    def __call__(self):
        try:
            with open(self.path, encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as e:
            with self._lock:
                if self._last is None:
                    self.failure = f"cannot read token file {self.path}: {e}"
                    raise FolioError(self.failure) from e
                return self._last
        with self._lock:
            self._last, self.failure = token, None
        return token


class _BearerToken(grpc.AuthMetadataPlugin):
    """Adds `authorization: Bearer <token>` to every call on a TLS channel."""

    def __init__(self, token):
        self._token = token

    def __call__(self, context, callback):
        try:
            t = self._token()
        except Exception as e:  # noqa: BLE001 - handed to gRPC, which fails the call with it
            callback((), e)
            return
        callback((("authorization", f"Bearer {t}"),) if t else (), None)


class FolioClient:
    """A client for one Folio node.

    addr: `host:port`, or `https://host:port` (TLS) or `http://host:port`.
    ca: path to the PEM CA certificate that signed the nodes' certificates; implies TLS.
        None reads FOLIO_CA; "" means no CA even if FOLIO_CA is set.
    tls: TLS with gRPC's default (system) roots when there is no CA.
    token: a bearer token sent with every call. None reads FOLIO_TOKEN (unless token_file
        is given); "" means no token even if FOLIO_TOKEN/FOLIO_TOKEN_FILE are set.
    token_file: a file holding the token, read again on every call so that a rotated token
        is picked up without a restart. None reads FOLIO_TOKEN_FILE (unless token is given).
    With none of these set (and no such environment), the channel is plaintext, as before.
    """

    def __init__(self, addr, timeout=10.0, *, ca=None, tls=False, token=None, token_file=None):
        self.timeout = timeout
        self.addr, https = _parse_addr(addr)

        if ca is None:
            ca = _env("FOLIO_CA")
        if token is None and token_file is None:
            token, token_file = _env("FOLIO_TOKEN"), _env("FOLIO_TOKEN_FILE")
            if token is not None:
                token_file = None  # FOLIO_TOKEN wins over FOLIO_TOKEN_FILE
        elif token and token_file:
            raise ValueError("give token or token_file, not both")

        self.tls = bool(ca) or bool(tls) or https
        if token:
            fixed = token.strip()
            self._token = lambda: fixed
        elif token_file:
            self._token = _TokenFile(token_file)
        else:
            self._token = None

        options = [
            ("grpc.max_send_message_length", MAX_MESSAGE),
            ("grpc.max_receive_message_length", MAX_MESSAGE),
        ]
        if self.tls:
            roots = None
            if ca:
                with open(ca, "rb") as f:
                    roots = f.read()
                if b"-----BEGIN CERTIFICATE-----" not in roots:
                    raise ValueError(f"{ca}: not a PEM certificate")
            creds = grpc.ssl_channel_credentials(root_certificates=roots)
            if self._token is not None:
                creds = grpc.composite_channel_credentials(
                    creds, grpc.metadata_call_credentials(_BearerToken(self._token))
                )
            self.channel = grpc.secure_channel(self.addr, creds, options=options)
        else:
            self.channel = grpc.insecure_channel(self.addr, options=options)
        self.stub = pb_grpc.VolumeServiceStub(self.channel)

    def close(self):
        self.channel.close()

    def _metadata(self):
        """Per-call metadata: the token when it cannot ride on TLS call credentials (gRPC sends
        call credentials only over TLS; a node without TLS accepts tokens only on loopback)."""
        if self.tls or self._token is None:
            return None
        t = self._token()
        return (("authorization", f"Bearer {t}"),) if t else None

    def _call(self, rpc, req):
        try:
            return rpc(req, timeout=self.timeout, metadata=self._metadata())
        except grpc.RpcError as e:
            err = _error(e, self._token)
            if err is None:
                raise
            raise err from None

    def create_volume(self):
        return self._call(self.stub.CreateVolume, pb.CreateVolumeRequest()).volume_id

    def snapshot(self, volume):
        return self._call(self.stub.GetSnapshot, pb.GetSnapshotRequest(volume_id=volume)).lsn

    def commit(self, volume, expected_lsn, pages, key):
        """Commits {index: 4096 bytes} on top of expected_lsn; returns the new LSN."""
        req = pb.CommitRequest(
            volume_id=volume,
            expected_lsn=expected_lsn,
            idempotency_key=key.encode() if isinstance(key, str) else key,
            durability=pb.DURABILITY_QUORUM,
            pages=[pb.PageWrite(page_idx=i, data=d) for i, d in sorted(pages.items())],
        )
        try:
            return self.stub.Commit(req, timeout=self.timeout, metadata=self._metadata()).lsn
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.ABORTED:
                md = dict(e.trailing_metadata() or ())
                raise Conflict(int(md.get("folio-current-lsn", 0)), e.details()) from None
            err = _error(e, self._token)
            if err is None:
                raise
            raise err from None

    def pull_changes(self, volume, since_lsn):
        """Returns (latest LSN, set of page indexes changed since since_lsn)."""
        r = self._call(
            self.stub.PullChanges, pb.PullChangesRequest(volume_id=volume, since_lsn=since_lsn)
        )
        return r.lsn, set(BitMap.deserialize(r.changed_pages))

    def read_pages(self, volume, lsn, indexes):
        r = self._call(
            self.stub.ReadPages,
            pb.ReadPagesRequest(volume_id=volume, lsn=lsn, page_idx=list(indexes)),
        )
        return {p.page_idx: p.data for p in r.pages}
