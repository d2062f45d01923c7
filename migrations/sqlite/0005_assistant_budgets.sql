-- The assistant's token budgets and request rates, shared by every server on this database and
-- kept across restarts (SQLite dialect). One row per scope: '' is all users together,
-- 'user:<name>' one user. Updated only as a whole, rows locked, by the rules of
-- ai_agent::reserve_in and release_in.
CREATE TABLE assistant_budgets (
    scope     TEXT    NOT NULL PRIMARY KEY,
    -- The UTC day (days since the Unix epoch) `used` and `reserved` belong to.
    day       INTEGER NOT NULL DEFAULT 0,
    -- Tokens settled (or charged) that day.
    used      INTEGER NOT NULL DEFAULT 0,
    -- Tokens held by model calls in flight, made that day.
    reserved  INTEGER NOT NULL DEFAULT 0,
    -- The request-rate cell (GCRA): when the next request is expected, Unix milliseconds.
    tat_ms    INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
