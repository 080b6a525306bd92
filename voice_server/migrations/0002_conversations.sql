-- Conversations and their turns: every channel (realtime WebSocket, chat completions, calls) records each
-- finished turn here as it completes, so a crash loses at most the turn in progress. Only the reply text the
-- user heard (or was sent) is conversation history; the full generated text is kept for diagnosis.
CREATE TABLE conversations (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id     uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    avatar      text NOT NULL,
    channel     text NOT NULL CHECK (channel IN ('realtime', 'chat', 'webrtc', 'sip', 'local')),
    started_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    ended_at    timestamptz
);
CREATE INDEX conversations_user_idx ON conversations (user_id, updated_at DESC);

CREATE TABLE turns (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    conversation_id  uuid NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    user_id          uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    turn_index       integer NOT NULL,
    user_text        text NOT NULL,
    reply_text       text NOT NULL,
    heard_text       text NOT NULL,
    interrupted      boolean NOT NULL DEFAULT false,
    marks            jsonb NOT NULL DEFAULT '{}',
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX turns_conversation_idx ON turns (conversation_id, id);
CREATE INDEX turns_user_recent_idx ON turns (user_id, created_at DESC);
