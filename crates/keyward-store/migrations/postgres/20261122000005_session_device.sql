-- What a session was opened from (the User-Agent at sign-in, shortened), so the account page
-- can tell a user's sessions apart. NULL for sessions opened before this column existed.
ALTER TABLE sessions ADD COLUMN device TEXT;
