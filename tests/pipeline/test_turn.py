"""Turn-taking core: plain calls on virtual time (no event loop, no clock)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from pipeline.turn import (
    BotAudible,
    Completeness,
    Decision,
    DiscardUtterance,
    EndOfTurn,
    InterruptBot,
    PauseBot,
    RequestFinal,
    ResumeBot,
    SpeechEnd,
    SpeechStart,
    Transcript,
    TurnCore,
    TurnInput,
    completeness,
)

VAD_DELAY = 0.064  # Silero needs ~2 windows of 32 ms to call speech start/end
ASR_DELAY = 0.12  # time for the final decode to come back


@dataclass
class Sim:
    """Drives a TurnCore on virtual time: scripted inputs plus ticks at the core's own deadlines.

    ``RequestFinal`` is answered after ASR_DELAY with the scripted words of the utterance in progress.
    """

    core: TurnCore = field(default_factory=TurnCore)
    now: float = 0.0
    log: list[tuple[float, Decision]] = field(default_factory=list)
    pending: list[tuple[float, TurnInput]] = field(default_factory=list)
    words: str = ""

    def at(self, t: float, event: TurnInput) -> None:
        self.pending.append((t, event))

    def speak(self, start: float, end: float, words: str) -> None:
        """The user speaks from ``start`` to ``end``; VAD reports both edges VAD_DELAY late."""
        self.at(start + VAD_DELAY, SpeechStart(start))
        self.at(start + VAD_DELAY + 0.001, _Words(words))  # type: ignore[arg-type]
        self.at(end + VAD_DELAY, SpeechEnd(end))

    def run(self, until: float) -> list[tuple[float, Decision]]:
        while True:
            self.pending.sort(key=lambda p: p[0])
            deadline = self.core.next_deadline()
            nxt = self.pending[0][0] if self.pending else None
            if deadline is not None and (nxt is None or deadline <= nxt) and deadline <= until:
                self.now = max(self.now, deadline)
                self._record(self.core.tick(self.now))
                if self.core.next_deadline() == deadline:  # the deadline did not move: avoid spinning
                    self.now += 1e-3
                continue
            if nxt is None or nxt > until:
                return self.log
            self.now, event = self.pending.pop(0)
            if isinstance(event, _Words):
                self.words = event.text
                continue
            self._record(self.core.feed(event, self.now))

    def _record(self, decisions: list[Decision]) -> None:
        for d in decisions:
            self.log.append((self.now, d))
            if isinstance(d, RequestFinal):
                self.at(self.now + ASR_DELAY, Transcript(self.words, segment=d.segment))

    def first(self, kind: type) -> tuple[float, Decision]:
        for t, d in self.log:
            if isinstance(d, kind):
                return t, d
        raise AssertionError(f"no {kind.__name__} in {self.log}")

    def kinds(self) -> list[str]:
        return [type(d).__name__ for _, d in self.log]


@dataclass(frozen=True)
class _Words:
    text: str


def test_completeness_reads_punctuation_and_trailing_words() -> None:
    """Finished sentences, trailing conjunctions/fillers and ellipses are classified as such."""
    assert completeness("What time is it?") is Completeness.FINISHED
    assert completeness("I was thinking about the trip.") is Completeness.FINISHED
    assert completeness("I was thinking...") is Completeness.UNFINISHED
    assert completeness("I went there and") is Completeness.UNFINISHED
    assert completeness("so um") is Completeness.UNFINISHED
    assert completeness("hello there") is Completeness.UNSURE
    assert completeness("I love it.") is Completeness.FINISHED
    assert completeness("I was thinking about.") is Completeness.UNFINISHED


def test_finished_question_ends_turn_fast() -> None:
    """A finished question ends the turn within 250 ms of the end of speech (VAD + ASR + short wait)."""
    sim = Sim()
    sim.speak(1.0, 2.5, "What is the weather like today?")
    sim.run(10)
    t, d = sim.first(EndOfTurn)
    assert isinstance(d, EndOfTurn) and d.text == "What is the weather like today?" and d.speech_end == 2.5
    assert t - 2.5 <= 0.25


def test_mid_sentence_pause_does_not_end_turn() -> None:
    """'I was thinking…' + 0.8 s pause + 'about the trip' is one turn."""
    sim = Sim()
    sim.speak(1.0, 2.0, "I was thinking...")
    sim.speak(2.8, 3.6, "I was thinking... about the trip.")
    sim.run(10)
    ends = [d for _, d in sim.log if isinstance(d, EndOfTurn)]
    assert len(ends) == 1 and ends[0].text.endswith("about the trip.")
    assert sim.first(EndOfTurn)[0] > 3.6


def test_unfinished_phrase_waits_then_ends() -> None:
    """A trailing 'and' waits the long silence, but the turn still ends if the user says nothing more."""
    sim = Sim()
    sim.speak(0.5, 1.5, "I went to the shop and")
    sim.run(10)
    t, _ = sim.first(EndOfTurn)
    assert 1.5 + TurnCore().config.unfinished_wait_s <= t <= 1.5 + 1.4


def test_noise_without_words_is_discarded() -> None:
    """Speech-like noise whose transcript is empty never becomes a turn."""
    sim = Sim()
    sim.speak(0.5, 0.9, "")
    sim.run(5)
    assert "EndOfTurn" not in sim.kinds() and "DiscardUtterance" in sim.kinds()


def _talking_bot(sim: Sim, at: float = 0.5) -> None:
    sim.speak(0.0, 0.3, "Tell me a story.")
    sim.run(at)
    sim.core.feed(BotAudible(True), at)


def test_barge_in_pauses_within_100ms_and_interrupts() -> None:
    """User speaks 5.0-6.0 s while the bot talks: bot audio stops within 100 ms, then the reply is cancelled
    and the user's words become the next turn."""
    sim = Sim()
    _talking_bot(sim)
    sim.speak(5.0, 6.0, "Wait, stop, what about the dog?")
    sim.run(10)
    t_pause, _ = sim.first(PauseBot)
    assert t_pause - 5.0 <= 0.1
    t_int, d = sim.first(InterruptBot)
    assert isinstance(d, InterruptBot) and d.reason == "barge_in" and t_int < 6.0
    t_end, turn = sim.log[-1]
    assert isinstance(turn, EndOfTurn) and turn.text == "Wait, stop, what about the dog?" and t_end > 6.0
    assert "ResumeBot" not in sim.kinds()


def test_cough_does_not_interrupt() -> None:
    """A 0.2 s cough (no words) while the bot talks pauses it briefly, then it resumes; no interruption."""
    sim = Sim()
    _talking_bot(sim)
    sim.speak(5.0, 5.2, "")
    sim.run(10)
    assert "InterruptBot" not in sim.kinds() and "EndOfTurn" in sim.kinds()  # only the first turn
    t_resume, _ = sim.first(ResumeBot)
    assert 5.2 < t_resume <= 5.2 + VAD_DELAY + ASR_DELAY + 0.01
    assert sim.core.bot_state == "audible"


def test_backchannel_does_not_interrupt() -> None:
    """'Mm-hm.' while the bot talks is acknowledged, not treated as taking the turn."""
    sim = Sim()
    _talking_bot(sim)
    sim.speak(5.0, 5.3, "Mm-hm.")
    sim.run(10)
    assert "InterruptBot" not in sim.kinds()
    assert sim.kinds().count("ResumeBot") == 1


def test_short_command_interrupts_by_its_words() -> None:
    """A short 'Stop.' (below the duration threshold) interrupts because it has real words, then ends a turn."""
    sim = Sim()
    _talking_bot(sim)
    sim.speak(5.0, 5.25, "Stop.")
    sim.run(10)
    assert "InterruptBot" in sim.kinds() and "ResumeBot" not in sim.kinds()
    ends = [d for _, d in sim.log if isinstance(d, EndOfTurn)]
    assert ends[-1].text == "Stop."


def test_no_words_after_pause_resumes_even_without_final() -> None:
    """If a blip's transcript never arrives, the bot resumes after the false-interruption window."""
    core = TurnCore()
    core.feed(BotAudible(True), 0.0)
    assert core.feed(SpeechStart(1.0), 1.06) == [PauseBot()]
    out = core.feed(SpeechEnd(1.1), 1.16)
    assert out == [RequestFinal(1)]
    deadline = core.next_deadline()
    assert deadline == pytest.approx(1.1 + core.config.false_interrupt_window_s)
    assert core.tick(deadline) == [ResumeBot()]


def test_user_continuing_cancels_unheard_reply_and_keeps_words() -> None:
    """Speech that resumes before the reply is audible cancels it; the turn keeps the earlier words."""
    sim = Sim()
    sim.speak(0.0, 1.0, "My sister is coming.")
    sim.run(1.5)
    assert "EndOfTurn" in sim.kinds()
    sim.speak(1.6, 2.4, "On Sunday.")
    sim.run(10)
    t, d = sim.first(InterruptBot)
    assert isinstance(d, InterruptBot) and d.reason == "user_continued"
    ends = [d for _, d in sim.log if isinstance(d, EndOfTurn)]
    assert ends[-1].text == "My sister is coming. On Sunday."


def test_stale_final_is_ignored() -> None:
    """A final transcript for an older segment does not end the newer utterance."""
    core = TurnCore()
    core.feed(SpeechStart(0.0), 0.0)
    core.feed(SpeechEnd(1.0), 1.0)
    core.feed(SpeechStart(1.1), 1.1)
    core.feed(SpeechEnd(2.0), 2.0)
    assert core.feed(Transcript("Hello.", segment=1), 2.05) == []
    assert core.next_deadline() is None
    out = core.feed(Transcript("Hello. How are you?", segment=2), 2.1)
    assert out == [EndOfTurn("Hello. How are you?", 2.0)]


def test_reply_finished_returns_to_idle() -> None:
    """After playout ends, the next utterance starts a fresh turn without the old words."""
    sim = Sim()
    _talking_bot(sim)
    sim.core.feed(BotAudible(False), 3.0)
    assert sim.core.bot_state == "idle"
    sim.speak(4.0, 4.5, "Thanks.")
    sim.run(10)
    ends = [d for _, d in sim.log if isinstance(d, EndOfTurn)]
    assert ends[-1].text == "Thanks."
    assert not any(isinstance(d, DiscardUtterance) for _, d in sim.log)
