-- The same volume opened again by another process: everything committed is there.
SELECT id, title, done FROM todo ORDER BY id;
SELECT count(*) FROM blob;
-- Shrink it: DELETE frees pages, VACUUM rewrites the file smaller.
DELETE FROM blob WHERE k > 10;
VACUUM;
SELECT count(*) FROM blob;
SELECT page_count < 30 FROM pragma_page_count;
UPDATE todo SET done = 1;
SELECT count(*) FROM todo WHERE done = 1;
PRAGMA integrity_check;
