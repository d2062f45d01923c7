-- Assistant runs: who asked what, how it went, and what undo needs (PostgreSQL dialect).
-- Times are milliseconds since the Unix epoch, stamped by the server.

CREATE TABLE assistant_runs (
    -- The run id (a UUID in simple form); unique across boards.
    id                 TEXT   COLLATE "C" NOT NULL PRIMARY KEY,
    board_id           TEXT   COLLATE "C" NOT NULL REFERENCES boards (id) ON DELETE CASCADE,
    -- Who asked (the token's `sub`), if known.
    user_id            TEXT,
    prompt             TEXT   NOT NULL,
    model              TEXT   NOT NULL,
    state              TEXT   NOT NULL CHECK (state IN
        ('running', 'completed', 'cancelled', 'failed', 'capped', 'interrupted')),
    -- Why the run failed, was capped or cancelled.
    error              TEXT,
    -- The model's last words, or a count of what was done ('' while running).
    summary            TEXT   NOT NULL DEFAULT '',
    -- Every tool call, as a JSON array ('[]' while running).
    tool_calls         TEXT   NOT NULL DEFAULT '[]',
    -- Token counts reported by the model service.
    prompt_tokens      BIGINT NOT NULL DEFAULT 0,
    completion_tokens  BIGINT NOT NULL DEFAULT 0,
    objects_created    BIGINT NOT NULL DEFAULT 0,
    objects_deleted    BIGINT NOT NULL DEFAULT 0,
    -- Model calls made.
    steps              BIGINT NOT NULL DEFAULT 0,
    started_at         BIGINT NOT NULL,
    -- When the run ended (or was marked interrupted); NULL while running.
    finished_at        BIGINT,
    -- The automatic version saved just before the run. Not a foreign key: retention may
    -- prune the version while the run is still listed.
    before_version     BIGINT,
    -- What the run changed, for undo: opaque bytes, empty if nothing (or while running).
    changes            BYTEA  NOT NULL DEFAULT ''::bytea,
    -- When and by whom the run was undone; both NULL unless it was.
    undone_at          BIGINT,
    undone_by          TEXT
);

CREATE INDEX assistant_runs_by_board ON assistant_runs (board_id, started_at);
