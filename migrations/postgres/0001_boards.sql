-- Boards, their update logs, snapshots and versions (PostgreSQL dialect).
-- Times are milliseconds since the Unix epoch, stamped by the server.

CREATE TABLE boards (
    id          TEXT   COLLATE "C" NOT NULL PRIMARY KEY,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    -- Sequence number of the newest update ever appended; never goes down.
    last_seq    BIGINT NOT NULL DEFAULT 0
);

-- Append-only log of Yjs updates (encoding v1, as received).
CREATE TABLE board_updates (
    board_id  TEXT   COLLATE "C" NOT NULL REFERENCES boards (id) ON DELETE CASCADE,
    seq       BIGINT NOT NULL,
    data      BYTEA  NOT NULL,
    PRIMARY KEY (board_id, seq)
);

-- The latest snapshot per board: the merged state of the log up to `seq`.
CREATE TABLE board_snapshots (
    board_id    TEXT     COLLATE "C" NOT NULL PRIMARY KEY REFERENCES boards (id) ON DELETE CASCADE,
    seq         BIGINT   NOT NULL,
    format      SMALLINT NOT NULL,
    data        BYTEA    NOT NULL,
    created_at  BIGINT   NOT NULL
);

-- Saved versions: full-state copies with who, when and why.
CREATE TABLE board_versions (
    id          BIGINT   GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    board_id    TEXT     COLLATE "C" NOT NULL REFERENCES boards (id) ON DELETE CASCADE,
    kind        TEXT     NOT NULL CHECK (kind IN ('named', 'auto')),
    label       TEXT,
    author      TEXT,
    reason      TEXT,
    created_at  BIGINT   NOT NULL,
    covers_seq  BIGINT   NOT NULL,
    format      SMALLINT NOT NULL,
    size        BIGINT   NOT NULL,
    data        BYTEA    NOT NULL
);

CREATE INDEX board_versions_by_board ON board_versions (board_id, id);
