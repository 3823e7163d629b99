-- Durations in microseconds: a verify takes well under a millisecond, and whole milliseconds
-- summed to 0 for it. Existing sums are converted, so averages stay true across the change.
ALTER TABLE usage_daily RENAME COLUMN duration_ms_sum TO duration_us_sum;
UPDATE usage_daily SET duration_us_sum = duration_us_sum * 1000;
