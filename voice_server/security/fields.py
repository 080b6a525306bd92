"""Where each sealed value lives: the associated-data contexts, in one place so writer and reader agree.

A context names the table and column and the row's identity, so a ciphertext moved to another row or column
(or another user's row: the user id is always part of the associated data, see `UserKey`) fails to open.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from voice_server.security.keys import UserKey

TurnColumn = Literal["user_text", "reply_text", "heard_text"]
TURN_COLUMNS: tuple[TurnColumn, ...] = ("user_text", "reply_text", "heard_text")


def turn(column: TurnColumn, conversation_id: uuid.UUID, turn_index: int) -> str:
    """A turn's text column; a turn is identified by its conversation and index."""
    return f"turns.{column}|{conversation_id}|{turn_index}"


def memory(column: Literal["text", "subject"], memory_id: uuid.UUID) -> str:
    """A memory's text or subject."""
    return f"memories.{column}|{memory_id}"


EpisodeColumn = Literal["thread", "speaker", "text"]


def episode(column: EpisodeColumn, episode_id: uuid.UUID) -> str:
    """An episode's (a remembered message's) thread name, speaker or text."""
    return f"episodes.{column}|{episode_id}"


def live_session(session_id: str) -> str:
    """A live session's state document in Redis."""
    return f"redis.session|{session_id}"


def media_name(media_id: uuid.UUID) -> str:
    """A media file's original name."""
    return f"media.name|{media_id}"


def media_file(media_id: uuid.UUID) -> str:
    """A media file's bytes on disk (each chunk adds its index and whether it is the last)."""
    return f"media.file|{media_id}"


ImportedColumn = Literal["conversation", "sender", "text"]


def import_name(import_id: uuid.UUID) -> str:
    """An import's file name."""
    return f"imports.name|{import_id}"


def import_error(import_id: uuid.UUID) -> str:
    """Why an import failed (a parser's message may name the file or quote its first bytes)."""
    return f"imports.error|{import_id}"


def import_report(import_id: uuid.UUID) -> str:
    """An audio/video import's per-recording report (JSON naming the user's files)."""
    return f"imports.media_report|{import_id}"


def import_file(import_id: uuid.UUID) -> str:
    """An uploaded import file waiting on disk (chunked like media files)."""
    return f"imports.file|{import_id}"


def imported(column: ImportedColumn, message_id: uuid.UUID) -> str:
    """An imported message's conversation name, sender or text."""
    return f"imported_messages.{column}|{message_id}"


PersonaColumn = Literal["profile", "edits"]


def persona(column: PersonaColumn, user_id: uuid.UUID) -> str:
    """A persona's profile or edits document (one persona per user)."""
    return f"personas.{column}|{user_id}"


def persona_example(example_id: uuid.UUID) -> str:
    """A behavioural example's text (one of the user's own messages)."""
    return f"persona_examples.text|{example_id}"


def bond_mood(user_id: uuid.UUID) -> str:
    """A user's bond mood (one row per user)."""
    return f"bonds.mood|{user_id}"


def proactive_birthday(user_id: uuid.UUID) -> str:
    """The birthday in a user's proactive settings (one row per user)."""
    return f"proactive_settings.birthday|{user_id}"


def milestone_title(milestone_id: uuid.UUID) -> str:
    """A user-set milestone's title."""
    return f"milestones.title|{milestone_id}"


def notification_text(notification_id: uuid.UUID) -> str:
    """A proactive message's text."""
    return f"notifications.text|{notification_id}"


def voice_clip(clip_id: uuid.UUID) -> str:
    """What was measured from one recording of the person's voice (quality, speaker embeddings, pitch)."""
    return f"voice_clips.features|{clip_id}"


def voice(column: Literal["name", "params"], voice_id: uuid.UUID) -> str:
    """A voice's name, or its parameters (a matched Kokoro pack and speed, or a Piper voice's config)."""
    return f"voices.{column}|{voice_id}"


def training_job(column: Literal["result", "error"], job_id: uuid.UUID) -> str:
    """A training job's result (evaluation, samples of the person's replies) or its error message."""
    return f"training_jobs.{column}|{job_id}"


def tuned_model(model_id: uuid.UUID) -> str:
    """A tuned model's evaluation."""
    return f"tuned_models.evaluation|{model_id}"


def tuned_model_file(model_id: uuid.UUID, name: str) -> str:
    """One sealed file of a tuned model (its weights or adapter)."""
    return f"tuned_models.file|{model_id}|{name}"


def audit_source(seq: int) -> str:
    """The source address in audit row ``seq``."""
    return f"audit_log.source|{seq}"


def open_turn(key: UserKey, row: dict[str, Any]) -> dict[str, Any]:
    """A copy of a turn row with its text columns opened; the row must have ``conversation_id`` and
    ``turn_index`` plus any of `TURN_COLUMNS`.

    Raises:
        voice_server.security.keys.DecryptionError: A value does not belong to this user and row.
    """
    opened = dict(row)
    for column in TURN_COLUMNS:
        if column in row:
            opened[column] = key.open(row[column], turn(column, row["conversation_id"], row["turn_index"]))
    return opened
