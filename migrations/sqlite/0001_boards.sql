-- Boards, their update logs, snapshots and versions (SQLite dialect).
-- Times are milliseconds since the Unix epoch, stamped by the server.

CREATE TABLE boards (
    id          TEXT    NOT NULL PRIMARY KEY,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    -- Sequence number of the newest update ever appended; never goes down.
    last_seq    INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

-- Append-only log of Yjs updates (encoding v1, as received), clustered by board then seq so
-- loading a board is one range scan.
CREATE TABLE board_updates (
    board_id  TEXT    NOT NULL REFERENCES boards (id) ON DELETE CASCADE,
    seq       INTEGER NOT NULL,
    data      BLOB    NOT NULL,
    PRIMARY KEY (board_id, seq)
) WITHOUT ROWID;

-- The latest snapshot per board: the merged state of the log up to `seq`.
CREATE TABLE board_snapshots (
    board_id    TEXT    NOT NULL PRIMARY KEY REFERENCES boards (id) ON DELETE CASCADE,
    seq         INTEGER NOT NULL,
    format      INTEGER NOT NULL,
    data        BLOB    NOT NULL,
    created_at  INTEGER NOT NULL
);

-- Saved versions: full-state copies with who, when and why.
CREATE TABLE board_versions (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    board_id    TEXT    NOT NULL REFERENCES boards (id) ON DELETE CASCADE,
    kind        TEXT    NOT NULL CHECK (kind IN ('named', 'auto')),
    label       TEXT,
    author      TEXT,
    reason      TEXT,
    created_at  INTEGER NOT NULL,
    covers_seq  INTEGER NOT NULL,
    format      INTEGER NOT NULL,
    size        INTEGER NOT NULL,
    data        BLOB    NOT NULL
);

CREATE INDEX board_versions_by_board ON board_versions (board_id, id);
