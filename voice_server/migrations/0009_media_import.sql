-- Audio, video and WhatsApp-with-media imports (voice_server/avatar/media_job.py).
-- Their transcripts are imported_messages like any other; what is new is the media they keep and report.

-- Seconds of audio transcribed, and the per-file report of an audio/video/archive import: for each recording
-- its name, kind, length, messages, status (transcribed, no speech, already imported, missing, damaged) and
-- the media ids kept. Sealed: the names are the user's files. NULL for text imports.
ALTER TABLE imports ADD COLUMN audio_seconds double precision NOT NULL DEFAULT 0;
ALTER TABLE imports ADD COLUMN media_report bytea;

-- Media files an import kept (rows of `media`, sealed like any upload): each transcribed recording itself
-- ('source') and a video's keyframes ('keyframe', offset_s into the video, source_id = the video's media row).
-- content_tag is a keyed per-user tag of the recording's SHA-256: the same recording imported again is
-- found without transcribing it again, and the tag reveals nothing without the user's key.
CREATE TABLE import_media (
    media_id     uuid PRIMARY KEY REFERENCES media(id) ON DELETE CASCADE,
    user_id      uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    import_id    uuid NOT NULL REFERENCES imports(id) ON DELETE CASCADE,
    kind         text NOT NULL CHECK (kind IN ('source', 'keyframe')),
    source_id    uuid REFERENCES media(id) ON DELETE CASCADE,
    offset_s     double precision,
    seconds      double precision,
    content_tag  bytea,
    CHECK ((kind = 'source') = (content_tag IS NOT NULL)),
    CHECK ((kind = 'keyframe') = (source_id IS NOT NULL))
);
CREATE INDEX import_media_import_idx ON import_media (import_id);
CREATE INDEX import_media_source_idx ON import_media (source_id) WHERE source_id IS NOT NULL;
CREATE UNIQUE INDEX import_media_content_idx ON import_media (user_id, content_tag) WHERE kind = 'source';
