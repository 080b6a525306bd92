"""The person's voice: their profile, the voices their avatar can speak with, which one it does, and the search.

One `VoiceService` per server, opened by `voice_server.resources.Resources`. What it offers:

- the **profile**: enrollment sentences read in the page and the person's own imported recordings, each checked
  and measured (`voice_server.avatar.voice.enroll`), kept sealed (`voice_server.avatar.voice.store`);
- the **voices**: the stock ones the server loaded (Piper joe, each Kokoro pack), the matched ones the search
  found, and Piper voices the person brought (their ``.onnx`` sealed as a media file), each with a sample;
- the **choice**: the voice every channel speaks with (`tts_for`, read when a conversation opens);
- the **match** (`voice_server.avatar.voice.job.MatchRunner`): one background search at a time, calls first.

The speaker encoders (torch and resemblyzer: seconds to import, ~300 MB) load on first use, not at start:
most servers measure a voice once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.speaker import SpeakerEncoders, load_speaker_encoders
from models.tts import KokoroTts, PiperTts, pack_from_bytes, piper_config
from pipeline.audio import to_int16, wav_bytes
from pipeline.ports import Tts
from voice_server.avatar.importers import ImportFormatError
from voice_server.avatar.imports import store as imports_store
from voice_server.avatar.voice import enroll, store
from voice_server.avatar.voice.job import MatchRunner, MatchSettings
from voice_server.avatar.voice.store import StoredVoice
from voice_server.live_calls import LiveCalls
from voice_server.security.keys import Keyring
from voice_server.stores.postgres import Database
from voice_server.user_files import MediaStore

if TYPE_CHECKING:
    from models.registry import ModelSet

log = logging.getLogger(__name__)

STOCK_PIPER = "stock-piper"
STOCK_KOKORO = "stock-kokoro-"
SAMPLE_TEXT = "Hello! It's good to hear from you. Tell me, how was your day?"
MAX_SAMPLE_CHARS = 200
MAX_IMPORT_CLIPS = 20  # imported recordings measured per request (the newest first)
MAX_PIPER_BYTES = 200 * 1024 * 1024  # a Piper "high" voice is ~110 MB
LOADED_VOICES_MAX = 16  # voices kept loaded (a Piper voice ~65 MB, a Kokoro pack view ~0.5 MB)
LICENCES = {STOCK_PIPER: "CC0 (voice data), MIT (package)", STOCK_KOKORO: "Apache-2.0"}


class VoiceNotFoundError(LookupError):
    """No such voice for this user (or the server has not loaded its engine)."""


class VoiceService:
    """See the module doc.

    Args:
        db, keys: The stores.
        media: Users' sealed files (imported recordings are read from it; brought Piper voices kept in it).
        models: The server's loaded models (its Piper and Kokoro engines), or ``None``.
        live: Live conversations (the search and the import measuring step aside for them).
        models_dir, profile: Where the speaker encoders are provisioned.
        match: The search settings (``None``: the default plan).
    """

    def __init__(
        self,
        db: Database,
        keys: Keyring,
        media: MediaStore,
        models: ModelSet | None,
        live: LiveCalls,
        *,
        models_dir: Path | None,
        profile: str,
        match: MatchSettings,
    ) -> None:
        self._db = db
        self._keys = keys
        self._media = media
        self._live = live
        self._models_dir = models_dir
        self._profile = profile
        self.piper: PiperTts | None = models.tts_fast if models is not None else None
        self.kokoro: KokoroTts | None = models.tts_quality if models is not None else None
        self._encoders: SpeakerEncoders | None = None
        self._encoders_lock = asyncio.Lock()
        self._loaded: OrderedDict[tuple[uuid.UUID, str], Tts] = OrderedDict()
        # Brought voices still alive, closed at the end. Weak: a voice evicted from `_loaded` may still be speaking
        # in a call, so it is never closed early; once no call holds it, it is freed with its worker thread.
        self._brought: weakref.WeakSet[PiperTts] = weakref.WeakSet()
        self.runner: MatchRunner | None = None
        if self.kokoro is not None:
            self.runner = MatchRunner(db, keys, self.kokoro, self.encoders, live, match, self._matched)

    async def start(self) -> None:
        """Start the match worker (when Kokoro is loaded)."""
        if self.runner is not None:
            await self.runner.start()

    async def aclose(self) -> None:
        """Stop the search, close the speaker encoders and the brought voices."""
        if self.runner is not None:
            await self.runner.aclose()
        if self._encoders is not None:
            await asyncio.to_thread(self._encoders.close, 5.0)
        for voice in list(self._brought):
            await asyncio.to_thread(voice.close, 2.0)

    async def encoders(self) -> SpeakerEncoders:
        """The speaker encoders, loaded on first use (a few seconds: torch)."""
        async with self._encoders_lock:
            if self._encoders is None:
                self._encoders = await asyncio.to_thread(load_speaker_encoders, self._models_dir, self._profile)
            return self._encoders

    def cancel_user(self, user_id: uuid.UUID) -> None:
        """Stop the user's searches at their next synthesis (account erasure)."""
        if self.runner is not None:
            self.runner.cancel_user(user_id)

    def forget(self, user_id: uuid.UUID) -> None:
        """Drop the user's loaded voices (account erasure)."""
        for cached in [k for k in self._loaded if k[0] == user_id]:
            del self._loaded[cached]

    # -------------------------------------------------------------------------------------------- profile

    async def add_clip(
        self, user_id: uuid.UUID, body: bytes, *, sentence: int
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Check, measure and keep one enrollment sentence (replacing an earlier reading of it).

        Returns:
            The clip and the profile, as the API shows them.

        Raises:
            ImportFormatError: Not readable audio.
            ClipUnusableError: Readable, but too quiet, clipped, noisy or without enough speech.
            ValueError: ``sentence`` is not one of `enroll.SENTENCES`.
        """
        if not 0 <= sentence < len(enroll.SENTENCES):
            raise ValueError(f"sentence must be 0-{len(enroll.SENTENCES) - 1}")
        audio = await asyncio.to_thread(enroll.decode_clip, body)
        encoders = await self.encoders()
        words = len(enroll.SENTENCES[sentence].split())
        quality, features = await encoders.lane.run(enroll.measure, encoders, audio, words=words)
        async with self._db.pool.connection() as conn, conn.transaction():
            key = await self._keys.for_user(conn, user_id)
            clip = await store.put_clip(conn, key, source="enrollment", sentence=sentence, media_id=None,
                                        seconds=quality.seconds, speech_s=quality.speech_s, features=features)
            clips = await store.clips(conn, key)
        profile = enroll.profile_json(clips)
        assert profile is not None
        return enroll.clip_json(clip), profile

    async def add_imported(self, user_id: uuid.UUID) -> tuple[int, dict[str, Any] | None]:
        """Measure the user's own imported recordings not measured yet (the newest `MAX_IMPORT_CLIPS`; the first
        `enroll.IMPORT_CLIP_S` of each), waiting for live calls before each. Unusable ones are skipped.

        Returns:
            How many were added, and the profile.
        """
        async with self._db.pool.connection() as conn:
            own = await imports_store.own_recordings(conn, user_id, limit=MAX_IMPORT_CLIPS)
            done = await store.clip_media_ids(conn, user_id)
        todo = [(media_id, seconds) for media_id, seconds in own if media_id not in done]
        added = 0
        encoders = await self.encoders() if todo else None
        for media_id, _ in todo:
            assert encoders is not None
            await self._live.until_none(30.0)
            body = await self._read_media(user_id, media_id, limit=64 * 1024 * 1024)
            if body is None:
                continue
            try:
                audio = await asyncio.to_thread(enroll.decode_clip, body, max_s=enroll.IMPORT_CLIP_S)
                quality, features = await encoders.lane.run(enroll.measure, encoders, audio)
            except (ValueError, ImportFormatError) as exc:  # ClipUnusableError is a ValueError
                log.info("voice profile: an imported recording was skipped (%s)", exc)
                continue
            async with self._db.pool.connection() as conn, conn.transaction():
                key = await self._keys.for_user(conn, user_id)
                await store.put_clip(conn, key, source="import", sentence=None, media_id=media_id,
                                     seconds=quality.seconds, speech_s=quality.speech_s, features=features)
            added += 1
        return added, await self.profile(user_id)

    async def _read_media(self, user_id: uuid.UUID, media_id: uuid.UUID, *, limit: int) -> bytes | None:
        if await self._media.get(user_id, media_id) is None:
            return None
        parts: list[bytes] = []
        size = 0
        async for chunk in self._media.content(user_id, media_id):
            parts.append(chunk)
            size += len(chunk)
            if size > limit:  # a long recording: its start is what the profile measures anyway
                break
        return b"".join(parts)

    async def profile(self, user_id: uuid.UUID) -> dict[str, Any] | None:
        """The profile as the API shows it (``None`` without clips)."""
        async with self._db.pool.connection() as conn:
            key = await self._keys.for_user(conn, user_id)
            return enroll.profile_json(await store.clips(conn, key))

    async def delete_clip(self, user_id: uuid.UUID, clip_id: uuid.UUID) -> bool:
        """Delete one clip; ``False`` when it is not the user's."""
        async with self._db.pool.connection() as conn:
            return await store.delete_clip(conn, user_id, clip_id)

    async def delete_profile(self, user_id: uuid.UUID) -> None:
        """Delete every clip (matched voices stay: they are voices, not the voiceprint)."""
        async with self._db.pool.connection() as conn:
            await store.delete_clips(conn, user_id)

    # -------------------------------------------------------------------------------------------- voices

    def stock_ids(self) -> list[str]:
        """The stock voices this server can speak with."""
        ids = [STOCK_PIPER] if self.piper is not None else []
        if self.kokoro is not None:
            ids += [f"{STOCK_KOKORO}{name}" for name in self.kokoro.voices]
        return ids

    def default_id(self) -> str | None:
        """The voice an avatar speaks with before its person chooses: the fast stock voice."""
        ids = self.stock_ids()
        return ids[0] if ids else None

    async def voices(self, user_id: uuid.UUID) -> dict[str, Any]:
        """The voices the user's avatar can speak with, and the chosen one."""
        async with self._db.pool.connection() as conn:
            key = await self._keys.for_user(conn, user_id)
            own = await store.voices(conn, key)
            chosen = await store.chosen(conn, user_id)
        listed: list[dict[str, Any]] = []
        for stock in self.stock_ids():
            name = "Piper joe (fast)" if stock == STOCK_PIPER else f"Kokoro {stock.removeprefix(STOCK_KOKORO)}"
            licence = LICENCES[STOCK_PIPER if stock == STOCK_PIPER else STOCK_KOKORO]
            listed.append({"id": stock, "kind": "stock", "name": name, "similarity": None, "license": licence})
        for voice in own:
            usable = (voice.kind == "matched" and self.kokoro is not None) or voice.kind == "piper"
            if not usable:
                continue
            similarity = None
            if voice.similarity_r is not None and voice.similarity_d is not None:
                similarity = {"r": round(voice.similarity_r, 3), "d": round(voice.similarity_d, 3)}
            licence = (LICENCES[STOCK_KOKORO] if voice.kind == "matched"
                       else json.loads(voice.params).get("license") or "as the voice's author licensed it")
            listed.append({"id": voice.public_id, "kind": voice.kind, "name": voice.name, "similarity": similarity,
                           "license": licence})
        ids = {v["id"] for v in listed}
        return {"voices": listed, "chosen": chosen if chosen in ids else self.default_id()}

    async def choose(self, user_id: uuid.UUID, voice_id: str) -> str:
        """Make ``voice_id`` the avatar's voice on every channel (from the next conversation on).

        Raises:
            VoiceNotFoundError: Not one of the user's voices.
        """
        await self._resolve(user_id, voice_id)  # proves it exists and loads
        async with self._db.pool.connection() as conn:
            await store.choose(conn, user_id, voice_id)
        return voice_id

    async def tts_for(self, user_id: uuid.UUID) -> Tts | None:
        """The voice the user's avatar speaks with (``None``: the server's default). A chosen voice that can no
        longer be loaded (deleted, its engine not loaded on this server) falls back to the default, logged."""
        async with self._db.pool.connection() as conn:
            chosen = await store.chosen(conn, user_id)
        if chosen is None:
            return None
        try:
            return await self._resolve(user_id, chosen)
        except VoiceNotFoundError:
            log.warning("the chosen voice cannot be loaded on this server; the default voice speaks instead")
            return None
        except Exception:
            log.exception("loading the chosen voice failed; the default voice speaks instead")
            return None

    async def sample(self, user_id: uuid.UUID, voice_id: str, text: str | None) -> bytes:
        """``text`` (default `SAMPLE_TEXT`) spoken with the voice, as a 16-bit mono WAV.

        Raises:
            VoiceNotFoundError: Not one of the user's voices.
            ValueError: The text is longer than `MAX_SAMPLE_CHARS` or has nothing to say.
        """
        text = (text or SAMPLE_TEXT).strip()
        if len(text) > MAX_SAMPLE_CHARS:
            raise ValueError(f"the sample text is limited to {MAX_SAMPLE_CHARS} characters")
        tts = await self._resolve(user_id, voice_id)
        audio = await tts.asynthesize(text)
        if audio.size == 0:
            raise ValueError("the sample text has nothing to say")
        return wav_bytes(to_int16(audio), tts.sample_rate)

    async def add_piper(self, user_id: uuid.UUID, name: str, onnx: bytes, config_raw: bytes) -> dict[str, Any]:
        """Keep a Piper voice the person brought (its weights sealed), after loading it and speaking a sentence
        with it. Returns the voice as listed.

        Raises:
            ValueError: A bad config, weights that do not load or speak, or over `MAX_PIPER_BYTES`.
        """
        if len(onnx) > MAX_PIPER_BYTES:
            raise ValueError(f"the voice is larger than {MAX_PIPER_BYTES // (1024 * 1024)} MB")
        config = piper_config(config_raw)
        voice = await asyncio.to_thread(_load_and_try, onnx, config, name)
        self._brought.add(voice)

        async def body() -> AsyncIterator[bytes]:
            view = memoryview(onnx)
            for start in range(0, len(view), 1 << 20):
                yield bytes(view[start : start + (1 << 20)])

        row = await self._media.create(user_id, f"{name}.onnx", "application/octet-stream", body(),
                                       limit=MAX_PIPER_BYTES)
        async with self._db.pool.connection() as conn:
            key = await self._keys.for_user(conn, user_id)
            stored = await store.add_voice(conn, key, kind="piper", name=name, params=json.dumps(config).encode(),
                                           media_id=row["id"])
        self._cache((user_id, stored.public_id), voice)
        listed = await self.voices(user_id)
        return next(v for v in listed["voices"] if v["id"] == stored.public_id)

    async def delete_voice(self, user_id: uuid.UUID, voice_id: str) -> bool:
        """Delete a matched or brought voice (a brought one's weights too); ``False`` if not the user's."""
        row_id = store.parse_voice_id(voice_id)
        if row_id is None:
            return False
        async with self._db.pool.connection() as conn, conn.transaction():
            key = await self._keys.for_user(conn, user_id)
            if await store.get_voice(conn, key, row_id) is None:
                return False
            media_id = await store.delete_voice(conn, user_id, row_id)
        if media_id is not None:
            await self._media.delete(user_id, media_id)
        self._loaded.pop((user_id, voice_id), None)
        return True

    async def _resolve(self, user_id: uuid.UUID, voice_id: str) -> Tts:
        if voice_id == STOCK_PIPER and self.piper is not None:
            return self.piper
        if voice_id.startswith(STOCK_KOKORO) and self.kokoro is not None:
            pack = voice_id.removeprefix(STOCK_KOKORO)
            if pack in self.kokoro.voices:
                return self._cache((user_id, voice_id), self.kokoro.voice(pack, name=pack))
        row_id = store.parse_voice_id(voice_id)
        if row_id is None:
            raise VoiceNotFoundError(voice_id)
        if (cached := self._loaded.get((user_id, voice_id))) is not None:
            self._loaded.move_to_end((user_id, voice_id))
            return cached
        async with self._db.pool.connection() as conn:
            key = await self._keys.for_user(conn, user_id)
            stored = await store.get_voice(conn, key, row_id)
        if stored is None:
            raise VoiceNotFoundError(voice_id)
        return self._cache((user_id, voice_id), await self._load(user_id, stored))

    async def _load(self, user_id: uuid.UUID, stored: StoredVoice) -> Tts:
        if stored.kind == "matched":
            if self.kokoro is None:
                raise VoiceNotFoundError(stored.public_id)
            meta, pack = store.unpack_params(stored.params)
            return self.kokoro.voice(pack_from_bytes(pack), speed=float(meta.get("speed", 1.0)), name=stored.name)
        assert stored.media_id is not None
        onnx = await self._read_media(user_id, stored.media_id, limit=MAX_PIPER_BYTES)
        if onnx is None:
            raise VoiceNotFoundError(stored.public_id)
        voice = await asyncio.to_thread(PiperTts.from_bytes, onnx, json.loads(stored.params), name=stored.name)
        self._brought.add(voice)
        return voice

    def _cache(self, key: tuple[uuid.UUID, str], tts: Tts) -> Tts:
        self._loaded[key] = tts
        self._loaded.move_to_end(key)
        while len(self._loaded) > LOADED_VOICES_MAX:
            self._loaded.popitem(last=False)
        return tts

    async def _matched(self, user_id: uuid.UUID, voice_id: uuid.UUID) -> None:
        """A search found a closer voice: it becomes the avatar's voice unless the person chose one already."""
        async with self._db.pool.connection() as conn:
            if await store.chosen(conn, user_id) is None:
                await store.choose(conn, user_id, store.voice_public_id(voice_id))

    # -------------------------------------------------------------------------------------------- match

    async def job_json(self, user_id: uuid.UUID, job_id: uuid.UUID) -> dict[str, Any] | None:
        """A job as the API shows it (live progress while it runs), or ``None`` if not the user's."""
        async with self._db.pool.connection() as conn:
            job = await store.get_job(conn, user_id, job_id)
        return None if job is None else self._job_json(job)

    def _job_json(self, job: dict[str, Any]) -> dict[str, Any]:
        done, total = int(job["done"]), int(job["total"])
        if job["state"] == "running" and self.runner is not None and (live := self.runner.progress(job["id"])):
            done, total = live
        default = None
        if job["default_r"] is not None and job["default_d"] is not None:
            default = {"r": round(float(job["default_r"]), 3), "d": round(float(job["default_d"]), 3)}
        return {"id": str(job["id"]), "state": job["state"], "done": done, "total": total,
                "voice_id": None if job["voice_id"] is None else store.voice_public_id(job["voice_id"]),
                "default_similarity": default, "error": job["error"],
                "created_at": job["created_at"].isoformat(),
                "finished_at": job["finished_at"].isoformat() if job["finished_at"] else None}

    async def start_match(self, user_id: uuid.UUID) -> dict[str, Any] | None:
        """Queue a search; the job, or ``None`` when one is queued or running already.

        Raises:
            VoiceNotFoundError: The server has no Kokoro engine to match with.
            LookupError: The profile is not ready (too little speech).
            voice_server.avatar.voice.job.QueueFullError: Too many searches wait.
        """
        if self.runner is None:
            raise VoiceNotFoundError("kokoro")
        profile = await self.profile(user_id)
        if profile is None or not profile["ready"]:
            raise LookupError("profile_not_ready")
        job = await self.runner.submit(user_id)
        return None if job is None else self._job_json(job)

    async def cancel_match(self, user_id: uuid.UUID, job_id: uuid.UUID) -> dict[str, Any] | None:
        """Cancel the user's search; the job, or ``None`` if not theirs."""
        if self.runner is None:
            return None
        job = await self.runner.cancel(user_id, job_id)
        return None if job is None else self._job_json(job)


def _load_and_try(onnx: bytes, config: dict[str, Any], name: str) -> PiperTts:
    """Load a brought Piper voice and make it say a word, so a broken one is refused on upload, not in a call."""
    try:
        voice = PiperTts.from_bytes(onnx, config, name=name)
    except Exception as exc:
        raise ValueError(f"the Piper voice does not load ({type(exc).__name__})") from None
    try:
        if voice.synthesize("Hello.").size == 0:
            raise ValueError("the Piper voice produced no audio")
    except ValueError:
        voice.close()
        raise
    except Exception as exc:
        voice.close()
        raise ValueError(f"the Piper voice does not speak ({type(exc).__name__})") from None
    return voice


