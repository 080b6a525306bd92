-- The emotional bond and proactive engagement (voice_server/avatar/bond.py, voice_server/avatar/proactive/).
-- Every table cascades from users (erasure) and joins the export. Private text (the mood, the birthday,
-- milestone titles, message texts) is sealed with the owner's data key; kinds, states, times and the dates
-- the scheduler filters on stay in clear, like memories.event_date.

-- One row per user once they have talked; no row is the starting state (DELETE /v1/bond deletes it).
-- Values are as of last_contact: readers decay them to "now" (voice_server/avatar/bond.py), so no job ever
-- rewrites idle rows.
CREATE TABLE bonds (
    user_id       uuid PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    affinity      real NOT NULL CHECK (affinity >= 0 AND affinity <= 1),
    trust         real NOT NULL CHECK (trust >= 0 AND trust <= 1),
    streak_days   integer NOT NULL DEFAULT 0 CHECK (streak_days >= 0),
    last_day      date,                 -- the user's local date of the last contact (streaks)
    last_contact  timestamptz,
    mood          bytea,                -- sealed JSON {"score": -1..1}
    turns         integer NOT NULL DEFAULT 0,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- A user's proactive settings; no row means the defaults (voice_server/avatar/proactive/rules.py).
CREATE TABLE proactive_settings (
    user_id             uuid PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    timezone            text NOT NULL DEFAULT 'UTC',
    morning_time        time NOT NULL DEFAULT '08:00',
    quiet_start         time NOT NULL DEFAULT '22:00',
    quiet_end           time NOT NULL DEFAULT '07:00',
    checkin_after_days  integer NOT NULL DEFAULT 3 CHECK (checkin_after_days BETWEEN 1 AND 365),
    disabled_kinds      text[] NOT NULL DEFAULT '{}',
    birthday            bytea,          -- sealed ISO date
    updated_at          timestamptz NOT NULL DEFAULT now()
);

-- Birthdays and anniversaries the user set.
CREATE TABLE milestones (
    id          uuid PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    title       bytea NOT NULL,         -- sealed
    date        date NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('birthday', 'anniversary')),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX milestones_user_idx ON milestones (user_id, created_at);

-- One row per occurrence that became due (a greeting for one local date, a birthday in one year, ...).
-- UNIQUE (user_id, kind, occurrence) makes planning idempotent across restarts and workers; a worker claims
-- a pending row by moving it to 'running' (FOR UPDATE SKIP LOCKED), and a claim older than the lease is
-- taken back. grounding holds ids and dates only, never text.
CREATE TABLE proactive_jobs (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id          uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    kind             text NOT NULL CHECK (kind IN ('greeting', 'checkin', 'on_this_day', 'milestone')),
    occurrence       text NOT NULL,
    due_at           timestamptz NOT NULL,
    expires_at       timestamptz,
    state            text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'running', 'sent', 'skipped')),
    outcome          text,              -- why it was skipped (opted_out, expired, nothing_found, ...)
    grounding        jsonb NOT NULL DEFAULT '{}',
    claimed_by       text,
    claimed_at       timestamptz,
    attempts         integer NOT NULL DEFAULT 0,
    notification_id  uuid,
    created_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    UNIQUE (user_id, kind, occurrence)
);
CREATE INDEX proactive_jobs_due_idx ON proactive_jobs (due_at) WHERE state = 'pending';
CREATE INDEX proactive_jobs_running_idx ON proactive_jobs (claimed_at) WHERE state = 'running';

-- What the avatar said on its own. The same unique occurrence key as its job: whatever happens to claims and
-- leases, an occurrence is stored (and so delivered) at most once.
CREATE TABLE notifications (
    id            uuid PRIMARY KEY,
    user_id       uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    job_id        uuid UNIQUE REFERENCES proactive_jobs(id) ON DELETE SET NULL,
    kind          text NOT NULL,
    occurrence    text NOT NULL,
    text          bytea NOT NULL,       -- sealed
    memory_ids    uuid[] NOT NULL DEFAULT '{}',
    message_ids   uuid[] NOT NULL DEFAULT '{}',
    source        text NOT NULL CHECK (source IN ('llm', 'template')),
    created_at    timestamptz NOT NULL,
    delivered_at  timestamptz,
    read_at       timestamptz,
    UNIQUE (user_id, kind, occurrence)
);
CREATE INDEX notifications_user_idx ON notifications (user_id, created_at DESC, id DESC);
CREATE INDEX notifications_unread_idx ON notifications (user_id, created_at) WHERE read_at IS NULL;
