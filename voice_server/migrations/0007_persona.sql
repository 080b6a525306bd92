-- The persona: what Soma learned about how a user writes and who is in their life (voice_server/avatar/persona/).
-- One row per user. The profile (style statistics, interests, people, places, self-description) and the
-- user's own edits are JSON documents sealed with the owner's data key (associated data names the user,
-- table and column: voice_server/security/fields.py). Status, counts and times stay in clear.
CREATE TABLE personas (
    user_id     uuid PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    status      text NOT NULL DEFAULT 'empty' CHECK (status IN ('empty', 'building', 'ready')),
    profile     bytea,                      -- sealed JSON: {"version", "name", "profile"}; NULL until built
    edits       bytea,                      -- sealed JSON of the user's edits; NULL when there are none
    built_at    timestamptz,
    messages    integer NOT NULL DEFAULT 0, -- the user's own messages the last build read
    imports     integer NOT NULL DEFAULT 0, -- finished imports when it was built
    examples    integer NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Behavioural examples: a bounded sample of the user's own messages (at most 2,000), each sealed, with its
-- MiniLM embedding (in clear, like memories' embeddings: similarity search runs in Postgres). Per turn the
-- two or three nearest to what the user just said are quoted in the prompt. Replaced whole at each build.
CREATE TABLE persona_examples (
    id          uuid PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    text        bytea NOT NULL,             -- sealed
    embedding   vector(384) NOT NULL
);
CREATE INDEX persona_examples_user_idx ON persona_examples (user_id);
