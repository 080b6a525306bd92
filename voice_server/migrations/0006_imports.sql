-- Imports: a person's exported history (WhatsApp, Telegram, ...) stored message by message.
-- Every text a person wrote or named is sealed with the owner's data key (bytea, associated data naming the
-- table, column and row: voice_server/security/fields.py). Formats, counts, states and times stay in clear.
CREATE TABLE imports (
    id          uuid PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    format      text,                       -- NULL until detected
    name        bytea NOT NULL,             -- the file's name (sealed)
    status      text NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'running', 'done', 'failed')),
    bytes_total bigint NOT NULL DEFAULT 0,
    read        integer NOT NULL DEFAULT 0,  -- messages parsed
    skipped     integer NOT NULL DEFAULT 0,  -- records the parser skipped (system lines, deleted, ...)
    created     integer NOT NULL DEFAULT 0,  -- messages stored (not already there from an earlier import)
    memories    integer NOT NULL DEFAULT 0,  -- memories created from the user's own messages
    skip_reasons jsonb NOT NULL DEFAULT '{}',
    error       bytea,                       -- why it failed (sealed: a parser's message may quote the file)
    worker      text NOT NULL,               -- the data dir's worker id: whose restart fails it if unfinished
    created_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);
CREATE INDEX imports_user_idx ON imports (user_id, created_at DESC);

-- One imported message. idem_key is a keyed per-user tag of the message's fingerprint and its occurrence
-- number (voice_server/avatar/import_job.py): re-importing the same file, or a later export of the same chat,
-- adds nothing it already has; the tag reveals nothing about the text without the user's key.
CREATE TABLE imported_messages (
    id              uuid PRIMARY KEY,
    user_id         uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    import_id       uuid NOT NULL REFERENCES imports(id) ON DELETE CASCADE,
    idem_key        bytea NOT NULL,
    source          text NOT NULL,
    conversation    bytea NOT NULL,          -- sealed
    sender          bytea NOT NULL,          -- sealed
    text            bytea NOT NULL,          -- sealed
    at              timestamptz,             -- naive source times are stored as if UTC (see import_job)
    is_user         boolean NOT NULL,
    attachment      text,
    UNIQUE (user_id, idem_key)
);
CREATE INDEX imported_messages_import_idx ON imported_messages (import_id);
CREATE INDEX imported_messages_user_at_idx ON imported_messages (user_id, at);
