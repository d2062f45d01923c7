-- One assistant run per board across every server on this database (PostgreSQL dialect).
--
-- A run's row is its claim on the board: at most one row per board is `running` (the partial
-- unique index). The run's server refreshes `alive_at` while it works (its heartbeat); a
-- `running` row whose heartbeat is older than the expiry (AssistantConfig::run_expiry) belongs
-- to a server that stopped, and is marked `interrupted` by whoever next looks.

ALTER TABLE assistant_runs ADD COLUMN alive_at BIGINT NOT NULL DEFAULT 0;
UPDATE assistant_runs SET alive_at = COALESCE(finished_at, started_at);

-- Rows written before this migration may hold several running runs of one board (servers
-- that stopped mid-run): all but the newest are interrupted, so the index can be built.
UPDATE assistant_runs SET state = 'interrupted', finished_at = started_at
WHERE state = 'running' AND EXISTS (
    SELECT 1 FROM assistant_runs AS newer
    WHERE newer.board_id = assistant_runs.board_id AND newer.state = 'running'
      AND (newer.started_at, newer.id) > (assistant_runs.started_at, assistant_runs.id));

CREATE UNIQUE INDEX assistant_runs_one_running ON assistant_runs (board_id)
    WHERE state = 'running';
