-- Episodic memory (issue 20): every message — imported, typed, or a finished call turn, of both speakers — is
-- searchable evidence with its speaker, its thread (the chat or conversation) and the time it was said.
-- Owner: voice_server/avatar/memory/episodes.py.
--
-- Sealed like every text of the user's: speaker, thread name and text (associated data: table, column, row).
-- In clear: the time, whether the user said it, the day it refers to (event_date, resolved from "next Tuesday"
-- against the message's own day), and `terms`: keyed per-user hashes of its words (64 bits of HMAC-SHA256 under
-- the user's tag key). They make lexical search possible without the words; what they reveal to someone with the
-- database but not the key is which of one user's messages share a word, and how often a word recurs (its
-- frequency profile), never the word itself, and nothing across users (every user has their own key).
CREATE TABLE episodes (
    id              uuid PRIMARY KEY,
    user_id         uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    message_id      uuid REFERENCES imported_messages(id) ON DELETE CASCADE,  -- an imported message, or
    turn_id         bigint REFERENCES turns(id) ON DELETE CASCADE,              -- a conversation's turn
    thread_tag      bytea NOT NULL,     -- keyed tag of the thread: neighbouring messages share it
    thread          bytea NOT NULL,     -- sealed: the chat's name ("Lena"), or the conversation's channel
    speaker         bytea NOT NULL,     -- sealed: who said it
    is_user         boolean NOT NULL,
    text            bytea NOT NULL,     -- sealed
    said_at         timestamptz NOT NULL,
    event_date      date,
    terms           bigint[] NOT NULL,
    wording         bigint NOT NULL,    -- keyed hash of its whole wording: how often it was said is in episode_terms
    CHECK ((message_id IS NULL) <> (turn_id IS NULL))
);
CREATE INDEX episodes_user_at_idx ON episodes (user_id, said_at);
CREATE INDEX episodes_thread_idx ON episodes (user_id, thread_tag, said_at);
CREATE INDEX episodes_terms_idx ON episodes USING gin (terms);
CREATE INDEX episodes_message_idx ON episodes (message_id) WHERE message_id IS NOT NULL;
CREATE INDEX episodes_turn_idx ON episodes (turn_id) WHERE turn_id IS NOT NULL;

-- Embeddings arrive later, from the background indexer, in batches; a separate table so filling one in is an
-- insert (the GIN and btree indexes of `episodes` are not touched again).
CREATE TABLE episode_vectors (
    episode_id  uuid PRIMARY KEY REFERENCES episodes(id) ON DELETE CASCADE,
    user_id     uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    embedding   vector(384) NOT NULL
);
CREATE INDEX episode_vectors_user_idx ON episode_vectors (user_id);
CREATE INDEX episode_vectors_embedding_idx ON episode_vectors USING hnsw (embedding vector_cosine_ops)
    WITH (m = 16, ef_construction = 64);

-- The indexer's queue: episodes without an embedding yet, oldest first.
CREATE TABLE episode_pending (
    episode_id  uuid PRIMARY KEY REFERENCES episodes(id) ON DELETE CASCADE,
    user_id     uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    queued_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX episode_pending_order_idx ON episode_pending (queued_at);
CREATE INDEX episode_pending_user_idx ON episode_pending (user_id);

-- How many of a user's distinct message wordings hold each term (lexical search weighs a rare word, a name or a
-- number, over a common one), and how often each wording was said (its `said|` term: small talk repeats). Counts
-- only grow (a deleted episode leaves its count): the weights drift a little, never wrong results, and erasure
-- removes the rows with the user.
CREATE TABLE episode_terms (
    user_id  uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    term     bigint NOT NULL,
    df       integer NOT NULL,
    PRIMARY KEY (user_id, term)
);

-- A memory remembers where it came from: the episode (message or turn) it was taken from.
ALTER TABLE memories ADD COLUMN episode_id uuid REFERENCES episodes(id) ON DELETE SET NULL;
