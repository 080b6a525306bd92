-- The avatar's own model: LoRA training jobs on the person's replies, the tuned models they produced, and which
-- model answers the person's calls. Written only by voice_server/avatar/training/store.py.

-- One job runs at a time per server (training takes both cores for many minutes and steps aside for calls).
CREATE TABLE training_jobs (
    id            uuid PRIMARY KEY,
    user_id       uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    state         text NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    stage         text NOT NULL DEFAULT 'queued',  -- preparing, training, evaluating, exporting, sampling, deciding
    minutes       real NOT NULL,                   -- the time budget of the training stage
    max_steps     integer NOT NULL,
    step          integer NOT NULL DEFAULT 0,
    total_steps   integer NOT NULL DEFAULT 0,
    losses        jsonb NOT NULL DEFAULT '[]',     -- [step, loss] pairs, thinned to a bounded curve
    result        bytea,                           -- sealed JSON: the evaluation, samples and the gate's decision
    error         bytea,                           -- sealed: a message may quote the person's data
    model_id      uuid,                            -- the model it produced (kept even when not switched on)
    worker        text NOT NULL,                   -- the data dir's worker id: whose restart fails it if unfinished
    created_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz
);
CREATE INDEX training_jobs_user_idx ON training_jobs (user_id, created_at);

-- A tuned model. Its weights (CTranslate2 int8, derived from the person's messages) and LoRA adapter are files
-- sealed with the person's data key under <data dir>/tuned/<user>/<model>/; this row holds what is known of it.
CREATE TABLE tuned_models (
    id            uuid PRIMARY KEY,
    user_id       uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    job_id        uuid REFERENCES training_jobs(id) ON DELETE SET NULL,
    base          text NOT NULL,                   -- the base model's catalog name
    passed        boolean NOT NULL,                -- whether it beat the prompt-only avatar on the gate
    evaluation    bytea NOT NULL,                  -- sealed JSON (perplexities, style distances)
    bytes         bigint NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tuned_models_user_idx ON tuned_models (user_id, created_at);

-- Which model answers the person: a tuned model, or none (the base model with the persona prompt). previous is
-- the one answering before the last switch (one-click rollback).
CREATE TABLE model_choices (
    user_id       uuid PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    active        uuid REFERENCES tuned_models(id) ON DELETE SET NULL,
    previous      uuid REFERENCES tuned_models(id) ON DELETE SET NULL,
    changed_at    timestamptz NOT NULL DEFAULT now()
);
