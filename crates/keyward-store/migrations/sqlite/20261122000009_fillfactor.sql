-- PostgreSQL's migration 9 leaves room on its pages for in-place updates; SQLite has no such
-- setting. This one keeps the two histories numbered alike.
SELECT 1;
