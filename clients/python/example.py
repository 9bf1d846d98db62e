"""A short example: store a note in a Folio volume and read it back.
    ./generate.sh && python3 example.py 127.0.0.1:7070   (with `folio dev` running)"""

import sys

from folio_client import PAGE_SIZE, Conflict, FolioClient

c = FolioClient(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:7070")
vol = c.create_volume()
note = "hello from Python".encode().ljust(PAGE_SIZE, b"\0")
lsn = c.commit(vol, expected_lsn=0, pages={0: note}, key="note-1")
try:
    c.commit(vol, expected_lsn=0, pages={0: note}, key="note-2")
except Conflict as e:
    print(f"second writer lost the race; the volume is at LSN {e.current}")
print(c.read_pages(vol, lsn, [0])[0].rstrip(b"\0").decode())
