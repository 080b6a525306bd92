-- When a memory was said: the time of the message or call turn it came from. An imported message from 2023
-- gives 2023, not the day of the import (issue 20); recall shows this date when the memory has no event date,
-- and a statement only supersedes one said before it. Rows from before this column keep their creation time.
ALTER TABLE memories ADD COLUMN said_at timestamptz;
UPDATE memories SET said_at = created_at;
ALTER TABLE memories ALTER COLUMN said_at SET DEFAULT now(), ALTER COLUMN said_at SET NOT NULL;
