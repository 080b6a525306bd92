"""Media made on the spot for the importer tests: espeak-ng speech encoded with PyAV (no files committed).

`encode_audio` writes speech as a voice note (Ogg/Opus), an M4A (AAC), MP3, WAV or FLAC; `make_video` an MP4
(H.264 + AAC) whose picture changes scene at given seconds while the speech plays; `whatsapp_zip` a
"WhatsApp Chat with …" export with media.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from fractions import Fraction
from typing import Literal

import av
import numpy as np
import numpy.typing as npt
from av.audio.stream import AudioStream
from av.container import OutputContainer

from tests.audio_fixtures import spoken

SENTENCES = (  # distinct, so nothing repeats the way a decoding loop does
    "Please turn on the kitchen lights.", "I love hiking in the mountains.",
    "My favourite food is grilled sardines.", "The train to Lisbon leaves at nine.",
    "We planted tomatoes in the garden.", "My brother bought a red bicycle.",
    "The library closes early on Sundays.", "She painted the fence bright yellow.",
    "Our neighbour plays the piano every evening.", "The coffee machine is broken again.",
    "I forgot my umbrella at the office.", "The children built a castle on the beach.",
    "My grandmother makes the best apple pie.", "We watched a film about whales.",
    "The bakery opens at seven in the morning.", "I need to renew my passport soon.",
    "The dog chased a cat across the street.", "He fixed the roof before the storm.",
    "We are going camping next weekend.", "The museum has a new dinosaur exhibit.",
    "I started reading a book about Japan.", "The soup needs a little more salt.",
    "My sister is learning to drive.", "The concert was cancelled because of the rain.",
    "I lost my keys somewhere in the park.", "The bus was full this morning.",
    "We celebrated her birthday with a big cake.", "The printer in the hallway is out of paper.",
    "My uncle grows oranges on his farm.", "The river froze during the winter.",
    "I booked a table at the Italian restaurant.", "The cat sleeps on the warm windowsill.",
    "We painted the bedroom light blue.", "My phone battery dies very quickly.",
    "The teacher gave us extra homework.", "The flowers smell wonderful after the rain.",
)
"""Three dozen different sentences espeak-ng says and Whisper hears (about two minutes with 1 s pauses)."""

AudioFormat = Literal["ogg", "m4a", "mp3", "wav", "flac"]
_CODECS: dict[AudioFormat, tuple[str, str, int]] = {  # container format, codec, codec sample rate
    "ogg": ("ogg", "libopus", 48_000),
    "m4a": ("ipod", "aac", 16_000),
    "mp3": ("mp3", "libmp3lame", 16_000),
    "wav": ("wav", "pcm_s16le", 16_000),
    "flac": ("flac", "flac", 16_000),
}


def speech(*sentences: str, gap_s: float = 0.6) -> npt.NDArray[np.int16]:
    """The sentences spoken one after another with ``gap_s`` of silence between them (16 kHz int16)."""
    gap = np.zeros(int(gap_s * 16_000), np.int16)
    parts: list[npt.NDArray[np.int16]] = []
    for sentence in sentences:
        parts += [spoken(sentence), gap]
    return np.concatenate(parts)


def encode_audio(pcm: npt.NDArray[np.int16], fmt: AudioFormat, *, metadata: dict[str, str] | None = None) -> bytes:
    """16 kHz mono ``pcm`` encoded as a whole ``fmt`` file."""
    container, codec, rate = _CODECS[fmt]
    buf = io.BytesIO()
    with av.open(buf, "w", format=container) as out:
        out.metadata.update(metadata or {})
        stream = out.add_stream(codec, rate=rate)
        assert isinstance(stream, AudioStream)
        stream.layout = "mono"
        _encode_pcm(out, stream, pcm)
    return buf.getvalue()


def _encode_pcm(out: OutputContainer, stream: AudioStream, pcm: npt.NDArray[np.int16]) -> None:
    resampler = av.AudioResampler(format=stream.format.name, layout="mono", rate=stream.rate)
    for start in range(0, len(pcm), 16_000):
        frame = av.AudioFrame.from_ndarray(pcm[None, start : start + 16_000], format="s16", layout="mono")
        frame.sample_rate = 16_000
        frame.pts = None
        for chunk in resampler.resample(frame):
            for packet in stream.encode(chunk):
                out.mux(packet)
    for chunk in resampler.resample(None):
        for packet in stream.encode(chunk):
            out.mux(packet)
    for packet in stream.encode(None):
        out.mux(packet)


def make_video(
    pcm: npt.NDArray[np.int16] | None,
    seconds: float,
    scene_changes: Sequence[float] = (),
    *,
    size: tuple[int, int] = (320, 240),
    fps: int = 10,
    gop: int = 10,
    rotation: int = 0,
) -> bytes:
    """An MP4 (H.264, key frame every ``gop`` frames) whose colour changes at each of ``scene_changes``
    seconds, with ``pcm`` (16 kHz) as its AAC audio track when given."""
    buf = io.BytesIO()
    width, height = size
    with av.open(buf, "w", format="mp4") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.codec_context.gop_size = gop
        video.options = {"preset": "ultrafast", "sc_threshold": "0"}
        if rotation:
            video.set_display_rotation(rotation)
        audio = None
        if pcm is not None:
            audio = out.add_stream("aac", rate=16_000)
            audio.layout = "mono"
        palette = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (220, 220, 40), (40, 220, 220), (220, 40, 220)]
        for i in range(int(seconds * fps)):
            t = i / fps
            scene = sum(1 for s in scene_changes if t >= s)
            pixels = np.empty((height, width, 3), np.uint8)
            pixels[:] = palette[scene % len(palette)]
            x = (i * 4) % max(1, width - 20)
            pixels[10:30, x : x + 20] = 255  # something moves, as in a real video
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)
        if audio is not None and pcm is not None:
            _encode_pcm(out, audio, pcm)
    return buf.getvalue()


def whatsapp_zip(chat: str, files: dict[str, bytes], *, chat_name: str = "WhatsApp Chat with Ana Souza.txt") -> bytes:
    """A "WhatsApp Chat with …" export with media: the chat text (deflated) and the attached files."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(chat_name, chat.encode())
        for name, data in files.items():
            archive.writestr(name, data)
    return buf.getvalue()
