-- The assistant's token budgets and request rates, shared by every server on this database and
-- kept across restarts (PostgreSQL dialect). One row per scope: '' is all users together,
-- 'user:<name>' one user. Updated only as a whole, rows locked, by the rules of
-- ai_agent::reserve_in and release_in.
CREATE TABLE assistant_budgets (
    scope     TEXT   COLLATE "C" NOT NULL PRIMARY KEY,
    -- The UTC day (days since the Unix epoch) `used` and `reserved` belong to.
    day       BIGINT NOT NULL DEFAULT 0,
    -- Tokens settled (or charged) that day.
    used      BIGINT NOT NULL DEFAULT 0,
    -- Tokens held by model calls in flight, made that day.
    reserved  BIGINT NOT NULL DEFAULT 0,
    -- The request-rate cell (GCRA): when the next request is expected, Unix milliseconds.
    tat_ms    BIGINT NOT NULL DEFAULT 0
);
