"""A chat history with a strongly marked style, for training tests: Sam writes all in lower case, says "bless your
socks" and ends every message with " x"; their friends write ordinary sentences. Deterministic.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

ME = "Sam Rivers"
FRIENDS = ("Alex", "Priya", "Tom")
CATCHPHRASE = "bless your socks"

_OPENERS = (
    "How was the {thing} on {day}?", "Are you coming to the {thing} later?", "Did you see the news about {place}?",
    "I'm thinking of going to {place} in {month}. Any tips?", "Can you bring the {item} tomorrow?",
    "My {relative} says hi, by the way.", "What are you cooking tonight?", "The {thing} got moved to {day}.",
    "Have you finished the {item} yet?", "Guess who I bumped into at the {place} market!",
)
_REPLIES = (
    "oh the {thing} was lovely, {catch} x", "yeah ill be there about {hour}, {catch} x",
    "no way, {place} again? {catch} x", "{place} in {month} is gorgeous, take a coat x",
    "course, ill put the {item} by the door x", "aw tell your {relative} i said hi back x",
    "probably pasta again haha, {catch} x", "{day} works for me, {catch} x", "nearly done with the {item} x",
    "who?? tell me everything x",
)
_GREETINGS = ("", "Hey! ", "Morning. ", "Quick one: ", "So, ", "Hiya. ", "Random, but ")
_LEADS = ("", "ha ", "omg ", "right so ", "ooh ", "aw ", "honestly ", "wait ")
_SLOTS = {
    "thing": ("gig", "match", "party", "quiz", "dinner", "meeting", "picnic", "wedding"),
    "day": ("monday", "tuesday", "friday", "saturday", "sunday"),
    "place": ("Lisbon", "Leeds", "Brighton", "Porto", "the harbour", "Berlin"),
    "month": ("may", "june", "july", "october"),
    "item": ("ladder", "tent", "book", "speaker", "cake tin"),
    "relative": ("mum", "sister", "brother", "gran"),
    "hour": ("six", "seven", "half eight", "nine"),
}


def _values(rng: random.Random) -> dict[str, str]:
    values = {name: rng.choice(options) for name, options in _SLOTS.items()}
    values["catch"] = CATCHPHRASE
    return values


def styled_whatsapp(exchanges: int, seed: int = 7) -> str:
    """A WhatsApp (Android, 24 h) export of ``exchanges`` friend-message → Sam-reply exchanges, a new session
    every few exchanges, over several weeks."""
    rng = random.Random(seed)
    at = datetime(2026, 3, 2, 18, 0)
    lines = []
    for i in range(exchanges):
        friend = FRIENDS[i % len(FRIENDS)]
        k = rng.randrange(len(_OPENERS))
        values = _values(rng)
        opener = rng.choice(_GREETINGS) + _OPENERS[k].format(**values)
        reply = (rng.choice(_LEADS) + _REPLIES[k].format(**values)).lower()
        lines.append(f"{at:%d/%m/%Y, %H:%M} - {friend}: {opener}")
        at += timedelta(minutes=rng.randint(1, 3))
        lines.append(f"{at:%d/%m/%Y, %H:%M} - {ME}: {reply}")
        at += timedelta(minutes=rng.randint(8, 30)) if i % 4 else timedelta(hours=rng.randint(9, 30))
    return "\n".join(lines) + "\n"


def styled(text: str) -> bool:
    """Whether ``text`` carries Sam's marks: no capital letters and the " x" ending."""
    text = text.strip()
    return bool(text) and text == text.lower() and text.endswith(" x")
