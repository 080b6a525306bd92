-- The person's voice (voice_server/avatar/voice/store.py owns these tables).

-- One recording of the person's voice that the profile is built from: an enrollment sentence read in the web
-- page, or one of their own imported recordings (media_id). The audio of an enrollment clip is not kept: only
-- what was measured from it. features is sealed JSON: the quality measures, both speaker embeddings and the
-- pitch and rate. Reading sentence N again replaces that clip (the unique index).
CREATE TABLE voice_clips (
    id          uuid PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    source      text NOT NULL CHECK (source IN ('enrollment', 'import')),
    sentence    integer,
    media_id    uuid REFERENCES media(id) ON DELETE CASCADE,
    seconds     double precision NOT NULL,
    speech_s    double precision NOT NULL,
    features    bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((source = 'enrollment') = (sentence IS NOT NULL)),
    CHECK ((source = 'import') = (media_id IS NOT NULL))
);
CREATE UNIQUE INDEX voice_clips_sentence_idx ON voice_clips (user_id, sentence) WHERE sentence IS NOT NULL;
CREATE UNIQUE INDEX voice_clips_media_idx ON voice_clips (user_id, media_id) WHERE media_id IS NOT NULL;

-- A voice the avatar can speak with besides the stock ones: a Kokoro pack matched to the profile ('matched';
-- params = the sealed pack and speed) or a Piper voice the person brought ('piper'; params = its sealed
-- config, media_id = its sealed .onnx). similarity_* is the profile's similarity on held-out text (resemblyzer
-- r, d-vector d) when measured.
CREATE TABLE voices (
    id            uuid PRIMARY KEY,
    user_id       uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    kind          text NOT NULL CHECK (kind IN ('matched', 'piper')),
    name          bytea NOT NULL,
    params        bytea NOT NULL,
    media_id      uuid REFERENCES media(id) ON DELETE CASCADE,
    similarity_r  real,
    similarity_d  real,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'piper') = (media_id IS NOT NULL))
);
CREATE INDEX voices_user_idx ON voices (user_id, created_at);

-- The voice the avatar speaks with on every channel: a stock id ('stock-piper', 'stock-kokoro-<pack>') or a
-- row of voices ('voice_<hex>'). No row: the server's default voice.
CREATE TABLE voice_choices (
    user_id     uuid PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    voice       text NOT NULL,
    chosen_at   timestamptz NOT NULL DEFAULT now()
);

-- Voice-match searches: one runs at a time per server (they take minutes of both cores and step aside for calls).
CREATE TABLE voice_jobs (
    id           uuid PRIMARY KEY,
    user_id      uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    state        text NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    done         integer NOT NULL DEFAULT 0,
    total        integer NOT NULL DEFAULT 0,
    voice_id     uuid REFERENCES voices(id) ON DELETE SET NULL,
    default_r    real,  -- the default voice's similarity on the same held-out text, to show the gain honestly
    default_d    real,
    error        text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz
);
CREATE INDEX voice_jobs_user_idx ON voice_jobs (user_id, created_at);

-- Whether an imported recording is the user speaking (a lone recording they said was theirs, a voice note
-- they sent): only those go into their voice profile. NULL for recordings imported before this column.
ALTER TABLE import_media ADD COLUMN by_user boolean;
