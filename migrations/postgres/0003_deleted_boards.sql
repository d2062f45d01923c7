-- Ids of deleted boards (PostgreSQL dialect). Connecting to a board creates it, so without this
-- a client that was offline when its board was deleted would bring the board back with its
-- stale copy on reconnect. Only an explicit create (or import) takes an id off this list.
CREATE TABLE deleted_boards (
    id          TEXT   COLLATE "C" NOT NULL PRIMARY KEY,
    deleted_at  BIGINT NOT NULL
);
