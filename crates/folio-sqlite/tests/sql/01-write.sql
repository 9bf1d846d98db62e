-- A new database in an empty volume: schema, rows, an index, transactions and a rollback.
PRAGMA page_size;
CREATE TABLE todo(id INTEGER PRIMARY KEY, title TEXT NOT NULL, done INTEGER NOT NULL DEFAULT 0);
CREATE INDEX todo_done ON todo(done);
INSERT INTO todo(title) VALUES ('write the VFS'), ('test it'), ('ship it');
BEGIN;
UPDATE todo SET done = 1 WHERE id = 1;
INSERT INTO todo(title) VALUES ('celebrate');
COMMIT;
BEGIN;
DELETE FROM todo;
ROLLBACK;
SELECT id, title, done FROM todo ORDER BY id;
-- Enough rows to span many pages (each ~1 KiB), in one transaction.
CREATE TABLE blob(k INTEGER PRIMARY KEY, v BLOB);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500)
INSERT INTO blob SELECT i, randomblob(1000) FROM n;
SELECT count(*), sum(length(v)) FROM blob;
SELECT done, count(*) FROM todo GROUP BY done ORDER BY done;
PRAGMA integrity_check;
