-- Cancelling a run from any server (SQLite dialect): a server that is asked to cancel a run
-- another server works on sets the flag; the run's server checks it every second while the run
-- works, and stops the run.
ALTER TABLE assistant_runs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
