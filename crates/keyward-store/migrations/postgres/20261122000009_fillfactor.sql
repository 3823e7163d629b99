-- Room on every page for the rows' next versions. `last_used_at` and the usage sums are
-- updated all the time and are in no index, so with free space on the page PostgreSQL
-- writes the new version there (a HOT update) and touches none of the table's indexes;
-- on a full page it must add an entry to every index. Applies to pages written from now on.
ALTER TABLE api_keys SET (fillfactor = 85);
ALTER TABLE usage_daily SET (fillfactor = 85);
