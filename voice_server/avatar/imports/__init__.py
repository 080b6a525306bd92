"""Import jobs: an uploaded export file queued, parsed (`voice_server.avatar.importers`), transcribed when it is
a recording, stored sealed in one transaction, then turned into memories.

`queue` (fair, bounded), `service` (the owned worker and progress), `job` (one file, one transaction),
`recordings_job` / `recordings_plan` (audio, video and WhatsApp-with-media files: the speech model's part),
`store` (the rows read back: what other features and the export may know of the feature's tables).
"""
