"""A small Python client for Folio, on stubs generated from proto/ (run ./generate.sh first).

    from folio_client import FolioClient, Conflict
    c = FolioClient("127.0.0.1:7070")
    vol = c.create_volume()
    lsn = c.commit(vol, expected_lsn=0, pages={0: b"hello".ljust(4096, b"\\0")}, key="k1")
    lsn, changed = c.pull_changes(vol, since_lsn=0)      # changed: a set of page indexes
    pages = c.read_pages(vol, lsn, [0, 1])               # {index: 4096 bytes}
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "folio_pb"))

import grpc  # noqa: E402
from pyroaring import BitMap  # noqa: E402

from folio.volume.v1 import volume_pb2 as pb  # noqa: E402
from folio.volume.v1 import volume_pb2_grpc as pb_grpc  # noqa: E402

PAGE_SIZE = 4096
MAX_MESSAGE = 8 * 1024 * 1024


class Conflict(Exception):
    """The volume is not at the expected LSN; `current` is where it is."""

    def __init__(self, current, message):
        super().__init__(message)
        self.current = current


class FolioClient:
    def __init__(self, addr, timeout=10.0):
        self.timeout = timeout
        self.channel = grpc.insecure_channel(
            addr,
            options=[
                ("grpc.max_send_message_length", MAX_MESSAGE),
                ("grpc.max_receive_message_length", MAX_MESSAGE),
            ],
        )
        self.stub = pb_grpc.VolumeServiceStub(self.channel)

    def close(self):
        self.channel.close()

    def create_volume(self):
        r = self.stub.CreateVolume(pb.CreateVolumeRequest(), timeout=self.timeout)
        return r.volume_id

    def snapshot(self, volume):
        return self.stub.GetSnapshot(
            pb.GetSnapshotRequest(volume_id=volume), timeout=self.timeout
        ).lsn

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
            return self.stub.Commit(req, timeout=self.timeout).lsn
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.ABORTED:
                md = dict(e.trailing_metadata() or ())
                raise Conflict(int(md.get("folio-current-lsn", 0)), e.details()) from None
            raise

    def pull_changes(self, volume, since_lsn):
        """Returns (latest LSN, set of page indexes changed since since_lsn)."""
        r = self.stub.PullChanges(
            pb.PullChangesRequest(volume_id=volume, since_lsn=since_lsn), timeout=self.timeout
        )
        return r.lsn, set(BitMap.deserialize(r.changed_pages))

    def read_pages(self, volume, lsn, indexes):
        r = self.stub.ReadPages(
            pb.ReadPagesRequest(volume_id=volume, lsn=lsn, page_idx=list(indexes)),
            timeout=self.timeout,
        )
        return {p.page_idx: p.data for p in r.pages}
