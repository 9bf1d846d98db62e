"""Checks the Python client against a live Folio node: python3 test_folio.py HOST:PORT.
Creates a volume, commits pages, hits a CAS conflict, pulls changes and reads pages back.
Exits non-zero on the first failed check."""

import sys

from folio_client import PAGE_SIZE, Conflict, FolioClient


def page(fill):
    return bytes([fill]) * PAGE_SIZE


def main(addr):
    c = FolioClient(addr)
    vol = c.create_volume()
    assert len(vol) == 16, vol
    assert c.snapshot(vol) == 0

    lsn1 = c.commit(vol, 0, {0: page(1), 7: page(2)}, "py-1")
    assert lsn1 == 1, lsn1
    lsn2 = c.commit(vol, 1, {7: page(3), 9: page(4)}, "py-2")
    assert lsn2 == 2, lsn2
    # The same key again: the original result, not a second commit.
    assert c.commit(vol, 1, {7: page(3), 9: page(4)}, "py-2") == 2

    try:
        c.commit(vol, 1, {1: page(5)}, "py-stale")
        raise AssertionError("a stale expected_lsn must conflict")
    except Conflict as e:
        assert e.current == 2, e.current

    lsn, changed = c.pull_changes(vol, 0)
    assert (lsn, changed) == (2, {0, 7, 9}), (lsn, changed)
    lsn, changed = c.pull_changes(vol, 1)
    assert changed == {7, 9}, changed

    now = c.read_pages(vol, 2, [0, 7, 9, 100])
    assert now == {0: page(1), 7: page(3), 9: page(4), 100: bytes(PAGE_SIZE)}
    before = c.read_pages(vol, 1, [7, 9])
    assert before == {7: page(2), 9: bytes(PAGE_SIZE)}
    c.close()
    print("python client: all checks passed")


if __name__ == "__main__":
    main(sys.argv[1])
