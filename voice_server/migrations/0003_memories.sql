-- Long-term memories: what the avatar knows about its user, one short statement per row.
-- Every query filters by user_id. A memory that a newer fact replaced keeps its row, marked superseded_by the
-- new one (superseded_at set: it is no longer recalled), so the history of what changed stays visible; deleting
-- a memory removes its row.
CREATE TABLE memories (
    id                      uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id                 uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    text                    text NOT NULL CHECK (length(text) BETWEEN 1 AND 2000),
    kind                    text NOT NULL DEFAULT 'fact'
                            CHECK (kind IN ('fact', 'preference', 'person', 'plan', 'feeling', 'event')),
    importance              real NOT NULL DEFAULT 0.5 CHECK (importance >= 0 AND importance <= 1),
    embedding               vector(384) NOT NULL,
    subject                 text,           -- the person/thing it is about ("Ana"), lower-case, for reconciling
    event_date              date,           -- when the remembered event happens or happened, if known
    source                  text NOT NULL DEFAULT 'conversation' CHECK (source IN ('conversation', 'user', 'import')),
    source_conversation_id  uuid REFERENCES conversations(id) ON DELETE SET NULL,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    last_recalled_at        timestamptz,
    recall_count            integer NOT NULL DEFAULT 0,
    superseded_by           uuid REFERENCES memories(id) ON DELETE SET NULL,
    superseded_at           timestamptz
) WITH (fillfactor = 80);
-- fillfactor: every recall stamps last_recalled_at/recall_count. Those columns are in no index, so with free
-- room on the page the update is HOT and skips the HNSW index; without it (full pages) each stamped row costs
-- an HNSW insert (~5 ms at 1 M rows).
-- Recall reads a user's live memories: per-user scans use this index (exact and fast for the thousands of
-- memories one person has); the HNSW index serves users with very many memories (imports).
CREATE INDEX memories_user_live_idx ON memories (user_id, created_at DESC) WHERE superseded_at IS NULL;
CREATE INDEX memories_user_all_idx ON memories (user_id, created_at DESC);
CREATE INDEX memories_conversation_idx ON memories (source_conversation_id) WHERE source_conversation_id IS NOT NULL;
CREATE INDEX memories_embedding_idx ON memories USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64);

-- Memory extraction runs in the background after each turn; a turn whose extraction has not finished (the
-- server stopped or crashed first) is picked up again at the next start.
ALTER TABLE turns ADD COLUMN memories_extracted boolean NOT NULL DEFAULT false;
CREATE INDEX turns_memory_pending_idx ON turns (created_at) WHERE NOT memories_extracted;
