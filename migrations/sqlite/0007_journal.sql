-- The append journal (SQLite dialect).
--
-- Every accepted update lands here first, in arrival order: a commit carrying updates for a
-- hundred boards writes the journal's last page or two, where `board_updates` (clustered by
-- board) needed a page per board. The server folds the journal into `board_updates` in the
-- background (and on start, after a crash), in one transaction that also advances each
-- board's `last_seq` and `updated_at`. Until then a board's newest rows, its `last_seq` and its
-- `updated_at` are read from here as well: `boards.last_seq` may lag the journal.
--
-- No index, on purpose: an index by board would put a page per board back into every commit.
-- The journal stays small (it is folded every few hundred milliseconds under load), so
-- reading one board's rows from it is a short scan.
CREATE TABLE board_journal (
    -- Arrival order.
    id        INTEGER PRIMARY KEY,
    board_id  TEXT    NOT NULL,
    -- The board's sequence number for this update (dense per board, as in board_updates).
    seq       INTEGER NOT NULL,
    data      BLOB    NOT NULL,
    -- When the update was accepted (ms since the Unix epoch): the board's updated_at.
    at        INTEGER NOT NULL
);
