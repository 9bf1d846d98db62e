-- A third process after the VACUUM: the smaller file reads back whole.
SELECT count(*), sum(length(v)) FROM blob;
SELECT page_count < 30 FROM pragma_page_count;
SELECT group_concat(title, ', ') FROM todo WHERE done = 1;
PRAGMA integrity_check;
