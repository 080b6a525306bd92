-- Session summaries (reflection, issue 20): a short summary of each thread's day of messages, written in the
-- background by the local LLM, is a memory of kind 'summary' (source 'reflection') that cites the messages it
-- was made from (`cites`: episode ids, so the Memories screen and recall can show them). Owner of the queue:
-- voice_server/avatar/memory/episodes.py; of the summaries: voice_server/avatar/memory/store.py.
ALTER TABLE memories DROP CONSTRAINT memories_kind_check;
ALTER TABLE memories ADD CONSTRAINT memories_kind_check
    CHECK (kind IN ('fact', 'preference', 'person', 'plan', 'feeling', 'event', 'summary'));
ALTER TABLE memories DROP CONSTRAINT memories_source_check;
ALTER TABLE memories ADD CONSTRAINT memories_source_check
    CHECK (source IN ('conversation', 'user', 'import', 'reflection'));
ALTER TABLE memories ADD COLUMN cites uuid[];
-- The thread and day a summary covers (a keyed tag): a day that grows later is summarised again and the
-- new summary supersedes the old one.
ALTER TABLE memories ADD COLUMN reflects bytea;
CREATE INDEX memories_reflects_idx ON memories (user_id, reflects) WHERE reflects IS NOT NULL;

-- A conversation's episodes name it, so deleting the conversation deletes them (and, through
-- `source_conversation_id`, its summaries) even when no turn is left to cascade from.
ALTER TABLE episodes ADD COLUMN conversation_id uuid REFERENCES conversations(id) ON DELETE CASCADE;

-- Days of a thread with new messages, waiting to be summarised (newest day first).
CREATE TABLE reflect_pending (
    user_id     uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    thread_tag  bytea NOT NULL,
    day         date NOT NULL,
    queued_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (user_id, thread_tag, day)
);
CREATE INDEX reflect_pending_day_idx ON reflect_pending (day DESC);
