"""The voice-match search: the Kokoro style (a mix of stock packs, a speed, maybe a small offset) that sounds most
like a person, judged by two independent speaker encoders.

Pure and blocking: it takes a ``synth`` and an ``embed`` callable and never touches a model, a thread or the
server; the caller runs it on a worker thread. Measured background (docs in /work/shared/VOICE.md): a Kokoro pack
is a float32 ``[510, 1, 256]`` array and packs mix as convex weighted sums; mixing reaches a target only when the
pool holds voices near it, and an off-simplex walk partly learns what one encoder rewards while the other
disagrees. Hence the final choice is made on held-out text and must beat the default pack on *both* encoders.

Stages, each candidate scored by the cosine similarity of the embedding of its audio for the search texts (one
embedding of the concatenated audio) to the target's ``r`` and ``d`` embeddings, ranked by their mean. Measured
(10 packs and mixes, targets jf_nezumi / jm_kumo held out, Spearman rank correlation of the search score with the
score on three held-out sentences): one sentence 0.84 / 0.94; two sentences concatenated 0.93 / 0.99, the mean of
their two embeddings 0.92 / 0.94 — concatenation is as steady or steadier and costs one embedding per candidate.

1. every pool pack alone at speed 1.0 (the default among them);
2. random convex mixes of 2-3 packs (Dirichlet weights, packs drawn favouring the best singles), speed 0.8-1.2;
3. hill-climbing around the best (perturbed weights and speed, kept only when better);
4. optionally a bounded random walk off the simplex: a 256-d offset shared by every row of the pack, scaled by
   the pool's per-dimension spread, a step kept only when it scores better.

Then the default and the best few candidates (``plan.finalists``) speak the held-out texts; the best of those
that beat the default on both ``r`` and ``d`` wins, else the default is returned with ``improved=False``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from models.speaker import Embeddings, similarity

FloatArray = npt.NDArray[np.float32]

Synth = Callable[[FloatArray, float, str], FloatArray]
"""``(style, speed, text) -> audio``: mono float32 at 16 kHz, blocking."""
Embed = Callable[[FloatArray], Embeddings]
"""``audio -> Embeddings`` (both L2-normalised); may raise ``ValueError`` for too little speech."""

SPEED_RANGE = (0.8, 1.2)
"""Speeds the random mixes draw from; hill-climbing may go slightly further (`_SPEED_LIMITS`)."""
_SPEED_LIMITS = (0.7, 1.3)
_MIX_TEMPERATURE = 0.1  # how strongly mixes favour the best singles: a 0.1 better mean score is e times as likely
_HILL_SIGMA_W = 0.12
_HILL_SIGMA_SPEED = 0.05
_HILL_NEW_PACK = 0.3  # chance a hill step brings in a pack outside the current mix
# Walk sizes, in units of the pool's per-dimension std. Measured on five held-out targets (fresh-text resemblyzer
# gain over the default, bench/voice.py): steps of 0.35 capped at 1.0 moved voices outside the pool's span (espeak)
# nowhere (+0.00); steps of 0.5 capped at 2.5 with most of a 128-synthesis budget walking gave +0.04 and +0.10
# there, and Piper joe +0.17 instead of +0.13. The both-encoders rule on held-out text keeps a walk honest.
_WALK_STEP = 0.5  # RMS of one walk step
_WALK_MAX = 2.5  # the walk's total offset never exceeds this RMS: stays in reach of real voices


class MatchCancelled(Exception):
    """Raised by the caller's ``checkpoint`` to stop the search; it propagates out of `search_voice`."""


@dataclass(frozen=True, slots=True)
class MatchPlan:
    """What to say and how much to spend.

    Attributes:
        search_texts: Sentences each candidate speaks during the search.
        heldout_texts: Sentences, disjoint from ``search_texts``, that judge the finalists and the default.
        budget: Most syntheses of search texts (one text is one synthesis); held-out syntheses come on top, at
            most ``(finalists + 1) * len(heldout_texts)``.
        seed: Seeds every random choice: the same inputs and seed give the same result.
        walk: Whether stage 4 (the off-simplex walk) runs.
        finalists: How many of the best search candidates (besides the default) speak the held-out texts.
        walk_share: Of the candidates left after the singles, the share the walk gets (the rest: 60 % mixes,
            40 % hill-climbing).
    """

    search_texts: tuple[str, ...]
    heldout_texts: tuple[str, ...]
    budget: int
    seed: int = 0
    walk: bool = True
    finalists: int = 3
    walk_share: float = 0.25

    def __post_init__(self) -> None:
        if not self.search_texts or not self.heldout_texts:
            raise ValueError("a match plan needs search texts and held-out texts")
        if set(self.search_texts) & set(self.heldout_texts):
            raise ValueError("search and held-out texts must be disjoint")
        if self.budget < len(self.search_texts):
            raise ValueError("the budget must cover at least one candidate (one synthesis per search text)")
        if self.finalists < 1:
            raise ValueError("at least one finalist is needed")
        if not 0.0 <= self.walk_share < 1.0:
            raise ValueError("walk_share must be within [0, 1)")


@dataclass(frozen=True, slots=True)
class MatchResult:
    """The chosen voice and how well it matches, measured on held-out text.

    Attributes:
        style: The style array (same shape as the pool's packs); the default pack when ``improved`` is False.
        speed: Kokoro speed to speak it at.
        recipe: JSON-able: ``stage`` that found it, ``weights`` by pack name, ``speed``, ``offset_rms`` and (when
            non-zero) ``offset`` (the walk's 256 values added to every row), ``search`` scores, ``syntheses``
            split into search and held-out, ``seed``.
        heldout_r, heldout_d: Similarity of the chosen voice to the target on held-out text (resemblyzer, d-vector).
        default_r, default_d: The same for the default pack.
        improved: Whether the chosen voice beat the default on both metrics (else it *is* the default).
        syntheses: Every synthesis made, search and held-out together.
        seconds: Wall time of the whole search.
    """

    style: FloatArray
    speed: float
    recipe: dict[str, Any]
    heldout_r: float
    heldout_d: float
    default_r: float
    default_d: float
    improved: bool
    syntheses: int
    seconds: float


@dataclass(slots=True)
class _Candidate:
    """A point in the search space: pool weights (sum 1), a speed and an offset in std units (or none)."""

    weights: npt.NDArray[np.float64]
    speed: float
    offset: npt.NDArray[np.float64] | None
    stage: str
    r: float = -math.inf
    d: float = -math.inf
    key: tuple[float, ...] = field(default=(), init=False)

    def __post_init__(self) -> None:
        offset = () if self.offset is None else tuple(np.round(self.offset, 6))
        self.key = (*np.round(self.weights, 6), round(self.speed, 4), *offset)

    @property
    def score(self) -> float:
        return (self.r + self.d) / 2


class _Search:
    """The search's state: the pool, the counters behind ``checkpoint``/``progress``, and every scored candidate."""

    def __init__(
        self,
        pool: Mapping[str, FloatArray],
        target: Embeddings,
        synth: Synth,
        embed: Embed,
        plan: MatchPlan,
        checkpoint: Callable[[], None],
        progress: Callable[[int, int], None],
    ) -> None:
        self.names = tuple(pool)
        self.packs = np.stack([np.asarray(pool[name], dtype=np.float32) for name in self.names])
        if not np.isfinite(self.packs).all():
            raise ValueError("voice packs must be finite")
        # Spread of the packs' mean style per dimension: the scale a walk step may move each dimension by.
        axes = tuple(range(1, self.packs.ndim - 1))
        self.std = self.packs.mean(axis=axes).std(axis=0).astype(np.float64)
        self.target, self.synth, self.embed, self.plan = target, synth, embed, plan
        self.checkpoint, self.progress = checkpoint, progress
        self.rng = np.random.default_rng(plan.seed)
        self.candidates = plan.budget // len(plan.search_texts)
        self.total = self.candidates * len(plan.search_texts) + (plan.finalists + 1) * len(plan.heldout_texts)
        self.done = 0
        self.search_syntheses = 0
        self.scored: dict[tuple[float, ...], _Candidate] = {}

    # -- candidates ---------------------------------------------------------------------------------------------

    def style(self, cand: _Candidate) -> FloatArray:
        """The style array a candidate stands for."""
        mixed = np.tensordot(cand.weights, self.packs.astype(np.float64), axes=1)
        if cand.offset is not None:
            mixed = mixed + self.std * cand.offset  # broadcasts over every row: one shared offset
        return np.ascontiguousarray(mixed, dtype=np.float32)

    def single(self, index: int, stage: str) -> _Candidate:
        weights = np.zeros(len(self.names))
        weights[index] = 1.0
        return _Candidate(weights, 1.0, None, stage)

    def speak(self, cand: _Candidate, texts: tuple[str, ...]) -> FloatArray:
        """The candidate's audio for ``texts``, concatenated; ``checkpoint`` before and ``progress`` after each."""
        style = self.style(cand)
        parts = []
        for text in texts:
            self.checkpoint()
            parts.append(np.asarray(self.synth(style, cand.speed, text), dtype=np.float32))
            self.done += 1
            self.progress(self.done, self.total)
        return np.concatenate(parts)

    def measure(self, cand: _Candidate, texts: tuple[str, ...]) -> tuple[float, float]:
        """``(r, d)`` similarity of the candidate speaking ``texts`` to the target."""
        emb = self.embed(self.speak(cand, texts))
        return similarity(emb.r, self.target.r), similarity(emb.d, self.target.d)

    def try_(self, cand: _Candidate) -> _Candidate:
        """Score ``cand`` on the search texts (once per distinct candidate) and return its scored copy."""
        known = self.scored.get(cand.key)
        if known is not None:
            return known
        if self.search_syntheses + len(self.plan.search_texts) > self.plan.budget:
            return cand  # unscored (score -inf): the stage counts already fit the budget; this is the guard
        self.search_syntheses += len(self.plan.search_texts)
        try:
            cand.r, cand.d = self.measure(cand, self.plan.search_texts)
        except ValueError:
            # Too little speech: a degenerate style (a walk gone astray) mumbles; it simply loses.
            pass
        self.scored[cand.key] = cand
        return cand

    def best(self) -> _Candidate:
        return max(self.scored.values(), key=lambda c: c.score)

    # -- stages -------------------------------------------------------------------------------------------------

    def run_singles(self, count: int, *, first: int) -> None:
        """The first ``count`` packs alone, pack ``first`` (the default) before the rest so it is always scored."""
        order = [first, *(i for i in range(len(self.names)) if i != first)]
        for index in order[:count]:
            self.try_(self.single(index, "single"))

    def run_mixes(self, count: int) -> None:
        singles = np.full(len(self.names), np.nan)
        for index in range(len(self.names)):
            known = self.scored.get(self.single(index, "single").key)
            if known is not None and math.isfinite(known.score):
                singles[index] = known.score
        # Packs never scored alone (budget too small) count as average.
        filled = np.where(np.isnan(singles), np.nanmean(singles) if np.isfinite(singles).any() else 0.0, singles)
        favour = np.exp((filled - filled.max()) / _MIX_TEMPERATURE)
        favour /= favour.sum()
        for _ in range(count):
            size = min(int(self.rng.integers(2, 4)), len(self.names))
            chosen = self.rng.choice(len(self.names), size=size, replace=False, p=favour)
            weights = np.zeros(len(self.names))
            weights[chosen] = self.rng.dirichlet(np.ones(size))
            speed = float(self.rng.uniform(*SPEED_RANGE))
            self.try_(_Candidate(weights, speed, None, "mix"))

    def run_hill(self, count: int) -> None:
        for _ in range(count):
            base = self.best()
            weights = base.weights.copy()
            support = weights > 0
            weights[support] += self.rng.normal(0.0, _HILL_SIGMA_W, int(support.sum()))
            if not support.all() and self.rng.random() < _HILL_NEW_PACK:
                weights[self.rng.choice(np.flatnonzero(~support))] = self.rng.uniform(0.0, 0.3)
            weights = np.clip(weights, 0.0, None)
            if weights.sum() <= 1e-9:
                weights = base.weights.copy()
            speed = float(np.clip(base.speed + self.rng.normal(0.0, _HILL_SIGMA_SPEED), *_SPEED_LIMITS))
            self.try_(_Candidate(weights / weights.sum(), speed, base.offset, "hill"))

    def run_walk(self, count: int) -> None:
        current = self.best()
        for _ in range(count):
            offset = np.zeros(len(self.std)) if current.offset is None else current.offset.copy()
            step = self.rng.normal(0.0, 1.0, len(self.std))
            offset += _WALK_STEP * step / _rms(step)
            if _rms(offset) > _WALK_MAX:
                offset *= _WALK_MAX / _rms(offset)
            tried = self.try_(_Candidate(current.weights, current.speed, offset, "walk"))
            if tried.score > current.score:
                current = tried

    # -- the held-out judgement ---------------------------------------------------------------------------------

    def finalists(self, default: _Candidate) -> list[_Candidate]:
        """The best ``plan.finalists`` scored candidates other than the default, at least one from off the walk
        when there is one: the walk can crowd the list with near-copies that one encoder likes."""
        ranked = sorted(
            (c for c in self.scored.values() if c.key != default.key and math.isfinite(c.score)),
            key=lambda c: c.score,
            reverse=True,
        )
        chosen = ranked[: self.plan.finalists]
        if chosen and all(c.stage == "walk" for c in chosen):
            on_simplex = next((c for c in ranked if c.stage != "walk"), None)
            if on_simplex is not None:
                chosen[-1] = on_simplex
        return chosen


def _rms(vector: npt.NDArray[np.float64]) -> float:
    return float(np.sqrt(np.mean(np.square(vector))))


def _allocate(candidates: int, pool_size: int, walk: bool, walk_share: float = 0.25) -> tuple[int, int, int, int]:
    """Candidates for (singles, mixes, hill, walk): singles first; of the rest ``walk_share`` walks, and what is
    left is 60 % mixes, 40 % hill-climbing."""
    singles = min(pool_size, candidates)
    rest = candidates - singles
    walks = int(rest * walk_share) if walk else 0
    mixes = math.ceil((rest - walks) * 0.6) if pool_size > 1 else 0
    return singles, mixes, rest - walks - mixes, walks


def search_voice(
    pool: Mapping[str, FloatArray],
    default: str,
    target: Embeddings,
    synth: Synth,
    embed: Embed,
    plan: MatchPlan,
    *,
    checkpoint: Callable[[], None] = lambda: None,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> MatchResult:
    """Search the styles reachable from ``pool`` for the one closest to ``target``; judge on held-out text.

    Args:
        pool: Stock packs by name, all the same shape (Kokoro: float32 ``[510, 1, 256]``), finite.
        default: The pool's pack to beat (and to fall back to).
        target: The person's embeddings (from their enrollment clips).
        synth: Speaks a style; called only after ``checkpoint`` returned.
        embed: Embeds 16 kHz audio. A ``ValueError`` during the search makes that candidate lose; during the
            held-out judgement it propagates.
        plan: Texts, budget, seed.
        checkpoint: Called before every synthesis; raise `MatchCancelled` to stop (it propagates and no further
            synthesis happens); may block (e.g. while live calls need the CPU).
        progress: ``(done, total)`` after every synthesis. ``total`` is fixed at the start
            (``budget // len(search_texts) * len(search_texts) + (finalists + 1) * len(heldout_texts)``) and may
            only shrink at the end when fewer finalists exist; the last call has ``done == total``.

    Returns:
        The winner; ``improved=False`` and the default pack at speed 1.0 when no finalist beats the default on
        both ``r`` and ``d`` held out.

    Raises:
        ValueError: ``default`` not in ``pool``, packs of different shapes or not finite.
        MatchCancelled: From ``checkpoint``.
    """
    started = time.monotonic()
    if default not in pool:
        raise ValueError(f"default pack {default!r} is not in the pool")
    search = _Search(pool, target, synth, embed, plan, checkpoint, progress)
    default_cand = search.single(search.names.index(default), "default")

    singles, mixes, hill, walks = _allocate(
        search.candidates, len(search.names), plan.walk and bool(search.std.any()), plan.walk_share
    )
    search.run_singles(singles, first=search.names.index(default))
    search.run_mixes(mixes)
    search.run_hill(hill)
    search.run_walk(walks)

    finalists = search.finalists(default_cand)
    search.total = search.done + (len(finalists) + 1) * len(plan.heldout_texts)
    default_r, default_d = search.measure(default_cand, plan.heldout_texts)
    winner, win_r, win_d = default_cand, default_r, default_d
    for cand in finalists:
        r, d = search.measure(cand, plan.heldout_texts)
        if r > default_r and d > default_d and (r + d) / 2 > (win_r + win_d) / 2:
            winner, win_r, win_d = cand, r, d

    improved = winner is not default_cand
    weights = {name: round(float(w), 6) for name, w in zip(search.names, winner.weights, strict=True) if w > 0}
    recipe: dict[str, Any] = {
        "stage": winner.stage if improved else "default",
        "weights": weights,
        "speed": round(winner.speed, 4),
        "offset_rms": 0.0 if winner.offset is None else round(_rms(winner.offset), 4),
        "search": {"r": round(winner.r, 4), "d": round(winner.d, 4)},
        "syntheses": {"search": search.search_syntheses, "heldout": search.done - search.search_syntheses},
        "seed": plan.seed,
    }
    if winner.offset is not None:
        recipe["offset"] = [round(float(v), 6) for v in search.std * winner.offset]
    return MatchResult(
        style=search.style(winner),
        speed=winner.speed,
        recipe=recipe,
        heldout_r=win_r,
        heldout_d=win_d,
        default_r=default_r,
        default_d=default_d,
        improved=improved,
        syntheses=search.done,
        seconds=time.monotonic() - started,
    )


# Sentences of everyday English, ~3-5 s each when spoken, with varied vowels and consonants so the encoders hear a
# voice rather than one phrase; search and held-out sets are disjoint (MatchPlan checks it).
_SEARCH_TEXTS = (
    "I usually take the long way home when the weather is this nice.",
    "Grandpa keeps a jar of buttons on the shelf above his workbench.",
    "The library closes early on Sundays, so we should leave soon.",
)
_HELDOUT_TEXTS = (
    "My favourite breakfast is warm bread with butter and a cup of tea.",
    "We watched the boats come back into the harbour just after sunset.",
    "Honestly, I think the second option sounds much more fun.",
)

DEFAULT_PLAN = MatchPlan(
    search_texts=_SEARCH_TEXTS[:2], heldout_texts=_HELDOUT_TEXTS, budget=128, finalists=3, walk_share=0.6
)
"""The background job: 64 candidates on two sentences (128 syntheses; most of them walking, see `_WALK_STEP`),
then 4 voices on three held-out sentences (12 more): 140 syntheses, about two minutes on 2 cores."""

CI_PLAN = MatchPlan(search_texts=_SEARCH_TEXTS[:1], heldout_texts=_HELDOUT_TEXTS[:2], budget=10, finalists=2)
"""The tests' plan: 10 one-sentence candidates (a one-step walk included), then 3 voices on two held-out
sentences: 16 syntheses."""
