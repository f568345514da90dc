-- Values only one stream may hold at a time, such as an external id among
-- the live records of a kind. Written in the append's transaction, under
-- the log's writer lock, from what each append takes and gives up: a
-- second stream taking a held value is refused. Derived from the log, not
-- history: a row changes holder or goes when its value is given up.
CREATE TABLE claims (
    claim     TEXT PRIMARY KEY,
    stream_id TEXT NOT NULL
);

-- A log that predates claims holds values nobody has claimed yet: its
-- owner folds them from the log once (`Store::fill_claims`) and this row goes.
CREATE TABLE claims_unfilled (up_to_position BIGINT NOT NULL);
INSERT INTO claims_unfilled SELECT MAX(position) FROM events HAVING COUNT(*) > 0;
