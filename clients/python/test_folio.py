"""Checks the Python client against a live Folio node: python3 test_folio.py HOST:PORT.
Creates a volume, commits pages, hits a CAS conflict, pulls changes and reads pages back.
Exits non-zero on the first failed check.

Against a secured node, set FOLIO_CA and FOLIO_TOKEN (or FOLIO_TOKEN_FILE): the checks then run
over TLS with that token, and the script also checks that a call without a token and one with a
garbage token are refused (Unauthenticated), and that a token file is read again on every call.
With FOLIO_READ_TOKEN (a token with only read scope) it also checks that such a token can read
but not commit (PermissionDenied)."""

import os
import sys
import tempfile

from folio_client import PAGE_SIZE, Conflict, FolioClient, PermissionDenied, Unauthenticated


def page(fill):
    return bytes([fill]) * PAGE_SIZE


def env(name):
    return os.environ.get(name) or None


def expect(exc, f, what):
    try:
        f()
    except exc as e:
        return e
    raise AssertionError(f"{what}: expected {exc.__name__}")


def main(addr):
    # No arguments: plaintext unless FOLIO_CA / FOLIO_TOKEN / FOLIO_TOKEN_FILE say otherwise.
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

    ca = env("FOLIO_CA")
    if ca and (env("FOLIO_TOKEN") or env("FOLIO_TOKEN_FILE")):
        assert c.tls, "FOLIO_CA is set: the client must speak TLS"
        secure_checks(addr, ca, vol)
        print("python client: all checks passed (TLS and tokens)")
    else:
        print("python client: all checks passed")


def secure_checks(addr, ca, vol):
    # token="" : no token at all, whatever the environment says.
    anon = FolioClient(addr, ca=ca, token="")
    expect(Unauthenticated, anon.create_volume, "create_volume without a token")
    anon.close()

    bad = FolioClient(addr, ca=ca, token="not-a-token")
    e = expect(Unauthenticated, bad.create_volume, "create_volume with a garbage token")
    assert e.details, "Unauthenticated carries the server's message"
    bad.close()

    # A token file is read on every call: a bad token, then the good one, on one client.
    good = env("FOLIO_TOKEN")
    if good is None:
        with open(env("FOLIO_TOKEN_FILE"), encoding="utf-8") as f:
            good = f.read().strip()
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "token")
        with open(path, "w", encoding="utf-8") as f:
            f.write("not-a-token\n")
        rot = FolioClient(addr, ca=ca, token_file=path)
        expect(Unauthenticated, lambda: rot.snapshot(vol), "snapshot with a bad token file")
        with open(path, "w", encoding="utf-8") as f:
            f.write(good + "\n")
        assert rot.snapshot(vol) == 2
        rot.close()

    read_token = env("FOLIO_READ_TOKEN")
    if read_token:
        r = FolioClient(addr, ca=ca, token=read_token)
        expect(
            PermissionDenied,
            lambda: r.commit(vol, 2, {1: page(6)}, "py-read-only"),
            "commit with a read-only token",
        )
        assert r.read_pages(vol, 2, [0]) == {0: page(1)}
        r.close()


if __name__ == "__main__":
    main(sys.argv[1])
