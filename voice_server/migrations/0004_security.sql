-- Encryption at rest, the audit log, encrypted media and share links (voice_server/security/).
--
-- Private text becomes bytea sealed with the owner's data key (voice_server/security/keys.py). Rows written
-- before this migration are kept as legacy plaintext marked by a leading 0x00 byte; the server re-seals them
-- at its next start (voice_server/security/backfill.py) and rewrites the tables so no plaintext stays behind
-- in their files.

-- A row here means legacy plaintext exists and start-up must seal it (a fresh install has none, so later starts
-- never scan the tables for it).
CREATE TABLE security_backfill (pending boolean NOT NULL);
INSERT INTO security_backfill SELECT true WHERE EXISTS (SELECT FROM turns) OR EXISTS (SELECT FROM memories);

-- One data key per user, wrapped by the master key (which never enters the database). Deleting the row
-- (erasing the user) crypto-shreds everything sealed with it, backups included.
CREATE TABLE user_keys (
    user_id        uuid PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    master_key_id  text NOT NULL,
    wrapped        bytea NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    rotated_at     timestamptz
);

-- The server's own data keys (values owned by no user; the audit log MAC), wrapped the same way.
CREATE TABLE server_keys (
    name           text PRIMARY KEY,
    master_key_id  text NOT NULL,
    wrapped        bytea NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE turns
    ALTER COLUMN user_text  TYPE bytea USING '\x00'::bytea || convert_to(user_text, 'UTF8'),
    ALTER COLUMN reply_text TYPE bytea USING '\x00'::bytea || convert_to(reply_text, 'UTF8'),
    ALTER COLUMN heard_text TYPE bytea USING '\x00'::bytea || convert_to(heard_text, 'UTF8');

-- Memory text and subject are sealed; the length check moves to the application (it sees the plaintext).
-- subject_tag is a keyed per-user HMAC of the subject, so "all live memories about Ana" stays an index lookup.
ALTER TABLE memories DROP CONSTRAINT IF EXISTS memories_text_check;
ALTER TABLE memories
    ALTER COLUMN text    TYPE bytea USING '\x00'::bytea || convert_to(text, 'UTF8'),
    ALTER COLUMN subject TYPE bytea USING CASE WHEN subject IS NULL THEN NULL
                                               ELSE '\x00'::bytea || convert_to(subject, 'UTF8') END,
    ADD COLUMN subject_tag bytea;
CREATE INDEX memories_subject_idx ON memories (user_id, subject_tag) WHERE superseded_at IS NULL;

-- Every read and change of user data, logins, tokens and admin actions. Append-only (triggers below, and the
-- application's role has no UPDATE/DELETE on it), hash-chained: hash = SHA-256(prev_hash ‖ canonical row),
-- mac = HMAC(server key, hash) so a rewrite of the chain is detectable even by someone who recomputes hashes.
-- No foreign keys: rows outlive the users they mention (after an erasure, user_id is a bare pseudonym and the
-- sealed source address is unreadable).
CREATE TABLE audit_log (
    seq        bigint PRIMARY KEY,
    at         timestamptz NOT NULL,
    actor_id   uuid,
    user_id    uuid,
    action     text NOT NULL,
    resource   text NOT NULL DEFAULT '',
    outcome    text NOT NULL,
    status     integer,
    source     bytea,
    prev_hash  bytea NOT NULL,
    hash       bytea NOT NULL,
    mac        bytea NOT NULL
);
CREATE INDEX audit_log_user_idx ON audit_log (user_id, seq DESC);
CREATE INDEX audit_log_actor_idx ON audit_log (actor_id, seq DESC);

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only (% refused)', TG_OP;
END $$;
CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();

-- Encrypted files (uploads, later imports and videos): the bytes live in the media directory, sealed in
-- chunks (voice_server/security/files.py); the row holds the sealed original name.
CREATE TABLE media (
    id            uuid PRIMARY KEY,
    user_id       uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name          bytea NOT NULL,
    content_type  text NOT NULL,
    size          bigint NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX media_user_idx ON media (user_id, created_at DESC);

-- Share links: signed, expiring, revocable capabilities for one resource (a media file now; blog posts and
-- videos later). The token itself is never stored: it is an HMAC-signed id, checked against this row.
CREATE TABLE share_links (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id        uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    resource_kind  text NOT NULL CHECK (resource_kind IN ('media')),
    resource_id    uuid NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL,
    revoked_at     timestamptz
);
CREATE INDEX share_links_user_idx ON share_links (user_id, created_at DESC);
