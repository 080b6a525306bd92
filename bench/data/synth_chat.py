"""A deterministic synthetic WhatsApp history of one person, "Sam Rivers", for training and judging his model.

Five one-to-one chats ("WhatsApp Chat with <name>.txt", the phone's "Export chat" text, Android or iOS
style) with his sister, his mum, his flatmate, a mate from football and a colleague, over about 14 months.
Sam's style is strongly marked and consistent (mostly lower case, no apostrophes, short messages, "haha",
catchphrases such as "no worries mate", "sound as a pound", "proper good", sign-offs "laters", "cheers x",
a few favourite emoji, hardly ever a closing full stop); the others write normally. Conversations are built
from a grammar of exchange types (question → answer, news → reaction, plan → change of plan) whose slots are
filled from word pools, and from a timeline of events (Jess moves to Berlin; the Lisbon trip moves from May
to June and then happens), so replies follow what was said and the same sentence rarely repeats. Messages
also carry media placeholders, links, phone numbers and e-mail addresses (for masking), the odd edited or
deleted message and multi-line lists.

    python -m bench.data.synth_chat                      # writes bench/data/training_history/, prints counts
    python -m bench.data.synth_chat --seed 30 --out /tmp/history

The same seed gives byte-identical files.
"""

from __future__ import annotations

import argparse
import collections
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

SEED = 30
SAM = "Sam Rivers"
START, END = date(2023, 4, 3), date(2024, 6, 28)
JESS_MOVES = date(2023, 5, 27)  # Jess leaves for her job in Berlin
LISBON_PLANNING = date(2024, 1, 8)  # the trip is first talked about (for May)
LISBON_MOVED = date(2024, 3, 12)  # ... and moved to June from here on
LISBON_TRIP = (date(2024, 6, 14), date(2024, 6, 17))
OUT = Path(__file__).resolve().parent / "training_history"
MEDIA = "\x00media"  # stands for a photo; written as the chat's style of placeholder

# Word tables, kept dense: one entry a line would triple the file.
# fmt: off
POOLS: dict[str, list[str]] = {
    # --- Sam's words (lower case, no apostrophes: his voice is applied later) ---
    "yes": ["yeah", "yep", "yeah defo", "ye", "go on then", "course", "yeah why not", "defo"],
    "ok": ["sound as a pound", "no worries mate", "proper good", "nice one", "works for me", "sweet", "sounds good",
           "lush", "perfect", "magic"],
    "hbu": ["hbu", "u?", "how about u", "hows u", "you good?", "hows things with u", "whats new with u"],
    "status": ["not bad ta", "all good here", "yeah good mate", "cant complain", "knackered tbh",
               "proper good actually", "alright ta", "surviving haha", "bit tired but good", "yeah not bad"],
    "when": ["tonight", "tomorrow", "this weekend", "on {day}", "{day} night", "after work", "later on",
             "{day} morning", "next week"],
    "day": ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"],
    "time": ["6", "half 6", "7", "half 7", "8", "quarter to 8", "half 8", "12", "1", "2ish", "10", "11"],
    "pub": ["the crown", "the red lion", "the anchor", "the fox and hounds", "the wheatsheaf", "the usual",
            "the new place on king st", "the one by the canal"],
    "customer": ["a bloke", "this lady", "a kid", "a courier", "a student", "an old boy", "a guy in full lycra",
                 "a woman from the council", "a lad"],
    "bike": ["road bike", "fixie", "brompton", "cargo bike", "e-bike", "bmx", "gravel bike", "tandem", "1980s raleigh",
             "kids bike", "mountain bike", "folding bike"],
    "problem": ["with a buckled wheel", "that hadnt been serviced in years", "with basically no brakes",
                "wanting a full rebuild", "with a snapped chain", "with a seized seatpost",
                "that squeaked like a dying duck", "with the gears all over the place", "with three punctures",
                "covered in mud"],
    "part": ["rear mech", "bottom bracket", "headset", "cassette", "chain", "set of brake pads", "inner tube",
             "back wheel", "derailleur hanger", "couple of spokes", "freehub", "gear cable", "saddle"],
    "busy": ["mad day at the shop", "busy one today", "quiet morning then", "shop was rammed", "proper busy at work",
             "long day", "mental at work today", "slow day at the shop", "weird day at work"],
    "role": ["the workshop on saturdays", "the late shift thursdays", "the stock order", "the bike fits",
             "the repairs bookings", "the website stuff", "training the new lad", "the kids bike sessions"],
    "dish": ["chilli", "a curry", "spag bol", "a stir fry", "fajitas", "a roast", "mac and cheese", "risotto",
             "a lasagne", "dahl", "shakshuka", "pie and mash", "tacos", "a big soup", "carbonara", "katsu curry"],
    "antic": ["ate a whole sock", "nicked a sandwich off the counter", "rolled in fox poo again",
              "is scared of the hoover", "found a tennis ball and wont let go of it", "had a bath and is sulking",
              "chased a pigeon into the pond", "is snoring on my feet", "chewed the tv remote",
              "made friends with a massive dog called {dogname}", "barked at his own reflection",
              "stole priyas slipper", "sat on a bee", "did zoomies round the whole park",
              "refused to walk in the rain", "learnt to open the kitchen door"],
    "dogname": ["bruno", "pickle", "monty", "luna", "ziggy", "otis", "bear", "nala"],
    "whenpast": ["this morning", "last night", "on our walk", "at the park", "while i was at work", "earlier",
                 "yesterday", "at 6am"],
    "result": ["won {n}-{m}", "lost {m}-{n}", "drew {n}-{n}", "got battered {big}-{m}", "nicked it {n}-{m}"],
    "n": ["2", "3", "4", "5"],
    "dom": ["2nd", "3rd", "5th", "8th", "11th", "14th", "17th", "19th", "21st", "23rd", "26th", "29th"],
    "m": ["0", "1"],
    "big": ["6", "7", "8"],
    "footie": ["scored a header", "missed a sitter", "their keeper was unreal", "ref was shocking", "my legs are gone",
               "pulled my hamstring a bit", "alex scored a screamer", "played in goal", "new lad is quality",
               "it was freezing", "pitch was a swamp"],
    "band": ["velvet moths", "northern static", "kid harbour", "the paper lanterns", "salt circus", "low tide social",
             "marrow", "glass foxes", "the tin pilots", "sunday driver"],
    "venue": ["the old fire station", "the roundhouse", "the union", "the academy", "the boiler room", "the parish"],
    "item": ["milk", "bin bags", "loo roll", "washing up liquid", "bread", "coffee", "eggs", "dog food", "teabags",
             "oat milk", "butter", "pasta"],
    "show": ["the bear", "slow horses", "taskmaster", "the traitors", "gogglebox", "succession", "match of the day",
             "bake off", "that heist film", "the new planet earth"],
    "berlinthing": ["the lakes", "the flea markets", "the bakeries", "the trains", "the parks", "the clubs",
                    "the bureaucracy", "the winter", "the kebabs"],
    "area": ["kreuzberg", "neukolln", "friedrichshain", "wedding", "prenzlauer berg", "moabit"],
    "lisbonbit": ["the trams", "the pasteis de nata", "the view from the castle", "the sardines", "that rooftop bar",
                  "the beach at cascais", "the hills", "alfama"],
    "bairro": ["alfama", "bairro alto", "baixa", "graca", "principe real"],
    "reason": ["got called in to work", "biscuit is poorly", "got a stinking cold", "jess is ringing",
               "the van is booked", "i said id help priya move stuff", "double booked myself",
               "boss wants me in early"],
    "emoji": ["😂", "😂", "😂", "👍", "👍", "🙌", "🐶", "🚲", "🍻"],
    "signoff": ["laters", "laters mate", "cheers x", "cheers mate", "right laters", "night x", "speak soon x",
                "catch u later", "laters x", "ta x", "cheers", "nighty night"],
    "reaction": ["haha no way", "thats mad", "proper good that", "love it", "ha class", "nooo", "gutted",
                 "fair enough", "get in", "bloody hell", "nice one", "mental"],
    "more": ["see u at {time}", "ill bring {item}", "biscuit says hi", "cant wait", "been a long week",
             "need a pint after this week", "gaz is off {day} so its chaos", "weathers grim here",
             "off to walk biscuit now", "just got home from the shop", "on my break", "on the bus home",
             "{when} works better for me", "knackered after football", "ill ring u {when}", "priya says hi",
             "cooking {dish} later", "watching {show} tonight", "got paid so im buying", "legs still dead from sunday",
             "biscuit is asleep on me", "shops been mental all week", "just back from the park", "cant be bothered tbh",
             "made {dish} last night", "need to fix my own bike at some point", "is it {day} already",
             "ill let u know {when}", "train was late again", "im about {when} if u fancy it", "long shift tomorrow",
             "might get a takeaway", "proper tired", "think its gonna rain", "in the queue at tesco"],
    # --- the others' words (standard spelling) ---
    "fmore": ["Hope work's not too mad.", "Speak later!", "It's been a long week.", "The weather is awful.",
              "Just got in from work.", "On the train now.", "I'm shattered.", "Give Biscuit a pat from me.",
              "Can't wait!", "Let me know.", "No rush.", "Anyway, how are you?", "I'll call you on {fday}.",
              "Let me know what you think.", "Right, back to work.", "Speak soon x",
              "I need a holiday.", "Are you around {fday}?", "Hope you're well.", "Mad week here too.",
              "Can't stop, in a meeting.", "Going to bed soon.", "What a day.", "Just finished my run.",
              "So much to do this week.", "Off to the shops.", "Work was long.",
              "I owe you one.", "Fingers crossed!", "Have a good one.", "More soon.", "Miss you!"],

    "fhi": ["Hey Sam, how's things?", "Hiya, how are you doing?", "Morning! How's your week going?",
            "Hey, you alright?", "How's it going?", "Hello stranger!", "Hey you, how are things?",
            "Evening! All good?"],
    "freact": ["Ha, classic.", "Sounds like a long day!", "Wow. People are something else.", "Oh no!",
               "That's brilliant.", "Haha, amazing.", "Fair enough.", "Nice one!", "Oh dear.", "Love that."],
    "fday": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"],
}


@dataclass(frozen=True, slots=True)
class Friend:
    """One chat partner: how they write and what they talk about with Sam."""

    name: str
    style: str  # "android" or "ios"
    per_week: float  # sessions a week on average
    topics: dict[str, float]
    emoji_rate: float = 0.05
    lower_rate: float = 0.0  # share of messages sent without a capital
    signature: str = ""  # appended now and then (Mum's "Love Mum x")
    nickname: str = ""  # what Sam calls them


FRIENDS = (
    Friend("Jess", "ios", 3.8, {"hello": 2, "jess_news": 4, "sam_news": 2, "biscuit": 2, "cook": 1, "show": 1,
           "visit": 1, "lisbon": 1, "contact": 0.5, "link": 0.5, "media": 1}, emoji_rate=0.2, nickname="sis"),
    Friend("Mum", "android", 3.4, {"hello": 2, "mum_check": 4, "jess_ask": 2, "work": 1, "biscuit": 2, "cook": 1,
           "contact": 0.7, "plan": 1, "media": 0.7}, signature="Love Mum x", nickname="mum"),
    Friend("Priya", "ios", 4.2, {"flat": 5, "biscuit": 2, "cook": 2, "show": 1, "gig": 1, "plan": 1,
           "work": 1, "contact": 0.5, "link": 0.7, "media": 1, "lisbon": 0.5}, emoji_rate=0.08, nickname="pri"),
    Friend("Alex", "android", 3.9, {"hello": 1, "football": 4, "gig": 2, "lisbon": 3, "plan": 2, "work": 1,
           "jess_ask": 1, "link": 1, "media": 1, "contact": 0.5, "show": 1}, emoji_rate=0.06,
           lower_rate=0.25, nickname="al"),
    Friend("Dan", "android", 3.6, {"shop": 5, "plan": 1, "football": 1, "gig": 1, "contact": 0.7, "link": 0.7,
           "media": 0.7, "biscuit": 0.5}, emoji_rate=0.04, nickname="dan"),
)
# fmt: on


@dataclass
class Ctx:
    """What an exchange needs: the random source, the day, who Sam is talking to, and the lines so far."""

    rng: random.Random
    day: date
    friend: Friend
    turns: list[tuple[bool, str]] = field(default_factory=list)
    said: set[str] = field(default_factory=set)  # one-off news already told in this chat

    def x(self, template: str, **bound: str) -> str:
        """Fill ``template``: ``[a|b|]`` picks an alternative, ``{slot}`` a bound value or a pool entry."""
        text = template
        for _ in range(6):  # pools hold templates too; six levels is more than any has
            new = re.sub(r"\[([^\[\]]*)\]", lambda m: self.rng.choice(m[1].split("|")), text)
            new = re.sub(r"\{(\w+)\}", lambda m: bound.get(m[1]) or self.pick(m[1]), new)
            if new == text:
                break
            text = new
        return re.sub(r"\s+([,?!.])", r"\1", re.sub(r" {2,}", " ", text)).strip()

    def pick(self, pool: str) -> str:
        return self.rng.choice(POOLS[pool])

    def sam(self, template: str, *, extend: bool = True, **bound: str) -> None:
        """Add Sam's line; a short one often runs on into an aside, as his messages do."""
        text = self.x(template, **bound)
        if extend and len(text.split()) < 6 and self.chance(0.6):
            text += " " + self.x("{more}")
        self.turns.append((True, text))

    def them(self, template: str, *, extend: bool = True, **bound: str) -> None:
        """Add the friend's line; sometimes with a second sentence."""
        text = self.x(template, **bound)
        if extend and self.chance(0.5):
            text += " " + self.x("{fmore}")
        self.turns.append((False, text))

    def chance(self, p: float) -> bool:
        return self.rng.random() < p


Exchange = Callable[[Ctx], None]


def ex_hello(c: Ctx) -> None:
    c.them("{fhi}")
    c.sam("[hey|hiya|alright|yo|] {status} {hbu}")
    c.them(
        "[Good thanks!|Not bad, busy week.|All good here.|Tired but fine.|Can't complain!]"
        "[ What are you up to {when}?| Any news?|]"
    )
    if c.chance(0.6):
        c.sam("[not much|nothing really|chilling|working|walking biscuit] [{when}|] [prob|] [{ok}|haha|]")


def ex_shop(c: Ctx) -> None:
    if c.chance(0.5):
        c.sam("{busy} [haha|] {customer} came in with a {bike} {problem}")
        c.them("{freact}[ Did you sort it?| What did Gaz say?|]")
        c.sam("[yeah|sort of|nah] [needed a new|had to order a|swapped the] {part} [in the end|haha|]")
        if c.chance(0.4):
            c.sam("[took me|spent] [an hour|all afternoon|ages|20 mins] on it [tbh|haha|]")
    else:
        c.them(
            "[Gaz wants you on|Can you cover|Are you doing] [the till|the workshop|the late shift|opening up] "
            "on {fday}?"
        )
        c.sam("[{yes}|cant {day} sorry|should be fine] [{ok}|] [whats the rota looking like|]")
        c.them("[Cheers!|Legend.|Great, I'll tell him.|Ok, I'll ask Mo instead.|Thanks mate.]")
    if c.chance(0.3):
        c.sam("[gaz|boss] wants me doing {role} [now|from next month|btw] [proper good|haha|]")


def ex_work(c: Ctx) -> None:
    c.them("[How's work?|How's the shop going?|Busy at work?|Still enjoying the bike shop?]")
    c.sam("[{busy}|{status}] [had|got] {customer} in with a {bike} {problem}")
    c.them("{freact}")
    if c.chance(0.5):
        c.sam("[gaz|the boss] [says im doing|has put me on] {role} [now|from next week] [{ok}|]")
        c.them("[That's great news!|Ooh, promotion?|Good for you.|Is that more money?]")
        c.sam("[bit more money yeah|not really haha|hopefully|a bit yeah] [{ok}|]")


def ex_biscuit(c: Ctx) -> None:
    if c.chance(0.5):
        c.sam("biscuit {antic} {whenpast} [haha|{emoji}|little idiot|]")
        if c.chance(0.4):
            c.turns.append((True, MEDIA))
        c.them(
            "[Haha, what is he like!|Oh no, poor Biscuit.|Classic Biscuit.|Give him a cuddle from me.|"
            "He's such a character.]"
        )
        if c.chance(0.5):
            c.sam("[cant stay mad at him|hes fine now|hes proper chuffed with himself|hes asleep now haha]")
    else:
        c.them("[How's Biscuit doing?|How's my favourite dog?|Is Biscuit behaving?|Any Biscuit news?]")
        c.sam("[hes good|hes a nightmare|hes well] [haha|] he {antic} {whenpast}")
        c.them("{freact}")


def ex_football(c: Ctx) -> None:
    if c.day.weekday() in (6, 0) and c.chance(0.7):  # Sunday or Monday: the match already happened
        c.them(
            "[How did it go today?|Result?|Good game?|How'd Sunday go?]"
            if c.friend.name != "Alex"
            else "[Good game today.|What a game.|Legs are dead after that.]"
        )
        c.sam("we {result} [{footie}|] [haha|]")
        c.them("{freact}")
        if c.chance(0.4):
            c.sam("{footie} [tbh|haha|]")
    else:
        c.them("[Football Sunday?|You playing Sunday?|Are you in for Sunday?|We're short for Sunday, you in?]")
        if c.chance(0.8):
            c.sam("[{yes}|] [im in|count me in|wouldnt miss it] [what time|where is it this week|]")
            c.them("[Kick off at {n}.|10am at the usual pitch.|11 at the rec.|Half 10, don't be late!]")
            c.sam("{ok}")
        else:
            c.sam("cant this week mate {reason}")
            c.them("[No worries.|Gutted, next week then.|Ah fair enough.]")


def ex_plan(c: Ctx) -> None:
    d1, d2 = c.rng.sample(POOLS["day"], 2)
    c.them("[Pint on|Coffee on|Fancy food on|Are we still on for] {d}?", d=d1.capitalize())
    c.sam("[{yes}|] [{time} at {pub}|{time} ok|where u thinking] [?|]")
    c.them("[Perfect, see you there.|Sounds good!|Great.|Done.]")
    if c.chance(0.35):
        c.sam("[sorry mate|ah man|argh] cant do {d1} now {reason} [can we do|how about] {d2} [instead|]", d1=d1, d2=d2)
        c.them("[No worries, {d2} works.|{d2} is fine.|Ok, {d2} then!|Fine by me.]", d2=d2.capitalize())
        c.sam("[{ok}|sound as a pound|no worries mate cheers|cheers x]")


def ex_gig(c: Ctx) -> None:
    band = c.pick("band")
    if c.chance(0.6):
        c.them(
            "[Have you seen|Did you know] {b} are playing {v} on the {dom}?",
            v=c.pick("venue").title(),
            b=" ".join(w.capitalize() for w in band.split()),
        )
        c.sam("[no way|shut up|ooh] [im in|get tickets|how much are they] [{emoji}|]")
        c.them("[£{n}5 each.|About £20.|Just got two!|Booking now.]")
        c.sam("[{ok}|nice one] [ill send u the money|cheers x|]")
    else:
        c.sam("{b} were proper good last night [{emoji}|] [ears still ringing|voice is gone|]", b=band)
        c.them("[Jealous!|Told you they'd be good.|Was it busy?|Did they play the new one?]")
        c.sam("[rammed|yeah|sort of] [haha|] [best gig this year|{reaction}]")


def ex_flat(c: Ctx) -> None:
    kind = c.rng.randrange(5)
    if kind == 0:
        c.them("[Whose turn is it for bins?|Bins go out tonight!|Did the bins go out?]")
        c.sam("[mine|oh yeah mine|think its mine] [ill do it tonight|on it|doing it now] [haha|]")
    elif kind == 1:
        item = c.pick("item")
        c.them("We're out of {i}[ again|]. [Can you grab some?|Are you near a shop?|]", i=item)
        c.sam("[{yes}|no worries mate] ill grab {i} on the way back [anything else|]", i=item)
        if c.chance(0.4):
            c.them("Could you get:\n- {a}\n- {b}\nThanks!!", a=c.pick("item"), b=c.pick("item"))
            c.sam("[{ok}|on it] [cheers x|]")
    elif kind == 2:
        c.them("[Electric|Water|Internet|Council tax] bill came, it's £{n}{m} each.")
        c.sam("[ill send it now|sent|ok ill transfer it {when}|cheers will do it after work]")
    elif kind == 3:
        c.them("[Sorry about the noise last night!|Sorry, my mates stayed late.|Is it ok if my sister stays Friday?]")
        c.sam("[no worries mate|course] [didnt hear a thing|all good|shes welcome] [haha|]")
    else:
        c.them(
            "[The washing machine is broken again.|The landlord is coming round {fday}.|"
            "The boiler's making that noise again.]"
        )
        c.sam("[ugh|not again|ah nightmare] [ill ring him|ill have a look later|want me to sort it] [?|]")
        c.them("[Would you? Thanks.|Please!|I've emailed him already.]")


def ex_cook(c: Ctx) -> None:
    if c.chance(0.5):
        c.them("[What's for tea?|Have you eaten?|What are you making?|Smells good, what is it?]")
        c.sam("[making|having|doing] {dish} [tonight|{when}|] [{emoji}|]")
        c.them("[Save me some!|Yum.|Recipe please!|Fancy.]")
    else:
        c.sam("[tried|made] that {dish} [recipe|thing] [{whenpast}|] [{reaction}|proper good|burnt it a bit haha]")
        if c.chance(0.3):
            c.turns.append((True, MEDIA))
        c.them("[Looks amazing!|Impressive.|You'll have to make it for me.|Not bad for you!]")


def ex_show(c: Ctx) -> None:
    show = c.pick("show")
    c.them("[Are you watching|Have you started|Did you see the end of] {s}?", s=show.title())
    c.sam("[yeah|nah|not yet] [on episode {n}|finished it {whenpast}|no spoilers] [{reaction}|]")
    c.them("[It's so good.|No spoilers then!|The ending though...|It gets better, promise.]")


def ex_jess_news(c: Ctx) -> None:
    if c.day < JESS_MOVES:
        c.them(
            "[Only {n} weeks till I move!|Still packing, help.|Did I tell you the flat fell through?|"
            "Berlin in {n} weeks, I'm terrified.]"
        )
        c.sam("[ull be fine|proper good tho|ill come help pack|exciting tho] [sis|] [{emoji}|]")
    else:
        c.them(
            "[Berlin update: {bt} are amazing!|Found a flat in {a}!|My German is still terrible.|"
            "Work is intense but I love it.|Went to {bt} this weekend.|Missing home a bit today.]",
            bt=c.pick("berlinthing"),
            a=c.pick("area").title(),
        )
        c.sam("[no way|proud of u|miss u] [sis|] [{ok}|thats proper good|come home soon x]")
        if c.chance(0.4):
            c.them("[How's everyone at home?|How's Biscuit?|Have you spoken to Mum?]")
            c.sam("[all good|same as ever|mum is fine] [biscuit {antic}|] [haha|]")


def ex_jess_ask(c: Ctx) -> None:
    c.them("[Have you heard from Jess?|How's your sister getting on?|Any news from Jess?|Is Jess ok?]")
    if c.day < JESS_MOVES:
        c.sam("[shes moving to berlin end of may|she got the berlin job|shes stressing about the move] [haha|]")
    else:
        c.sam(
            "[yeah|] jess [says|reckons] [berlin is proper good|{bt} are great|she found a flat in {a}|"
            "her german is getting better] [{emoji}|]",
            bt=c.pick("berlinthing"),
            a=c.pick("area"),
        )
    c.them("{freact}")


def ex_sam_news(c: Ctx) -> None:
    c.sam("[guess what|news|btw] [gaz put me on {role}|biscuit {antic}|we {result} on sunday]")
    c.them("[Amazing!!|Haha no way.|Tell me everything.|Brilliant.]")


def ex_mum_check(c: Ctx) -> None:
    c.them(
        "[Are you eating properly?|Call me when you get a minute.|Did you get my parcel?|"
        "Dad says hello.|Don't forget Nan's birthday on {fday}.|Are you coming for Sunday dinner?]"
    )
    c.sam("[yeah mum|will do|yes mum|ah yeah] [will ring u {when}|all good|got it cheers|{ok}] [x|]")
    if c.chance(0.5):
        c.them("[Good. Love you.|Ok, speak soon.|Wrap up warm, it's cold.|Your dad's doing a roast.]")
        c.sam("[love u too x|cheers x|laters mum x|sounds proper good]")


def ex_visit(c: Ctx) -> None:
    c.them(
        "[When are you coming to visit?|You should come out in {mon}!|Book those flights!]",
        mon=c.rng.choice(["the summer", "October", "spring", "December"]),
    )
    c.sam(
        "[soon i promise|looking at flights now|maybe {mon}|need to sort biscuit first] [haha|]",
        mon=c.rng.choice(["october", "march", "after lisbon", "when its warmer"]),
    )


def ex_lisbon(c: Ctx) -> None:
    if c.day < LISBON_PLANNING:
        return ex_sam_news(c) if c.friend.name == "Jess" else ex_plan(c)
    month = "may" if c.day < LISBON_MOVED else "june"
    if c.day >= LISBON_MOVED and "lisbon moved" not in c.said and c.day < LISBON_TRIP[0]:
        c.said.add("lisbon moved")
        c.sam(
            "[bad news|update|btw] lisbon has moved to june [the flights got cancelled|{why}]",
            why="[alex|al] cant do may" if c.friend.name != "Alex" else "ryanair cancelled our flights",
        )
        c.them("[Ah no! June is fine though.|Better weather in June anyway.|Fine by me.|Which dates?]")
        c.sam("[{ok}|june it is then] [14th to 17th|friday 14th to monday 17th|]")
    elif c.day > LISBON_TRIP[1]:
        c.them("[How was Lisbon?|Lisbon pics please!|Still thinking about Lisbon.]")
        c.sam("lisbon was proper good [loved {lisbonbit}|still dreaming about {lisbonbit}] [{emoji}|]")
        if c.chance(0.5):
            c.turns.append((True, MEDIA))
    elif c.day >= LISBON_TRIP[0]:
        c.sam("[made it|in lisbon] [{emoji}|] [{lisbonbit} [are|is] mental|sun is out|already had 3 pasteis]")
        c.them("[Jealous!!|Have fun!|Send pics.]")
    elif c.chance(0.4):
        c.them(
            "[Should we do a day trip to Sintra?|Do we need to book the surf lesson?|"
            "I've sorted the airport transfer.|Just looked up things to do in Lisbon.|"
            "Apparently the tram queues are huge.|Found a fado bar we have to go to.]"
        )
        c.sam("[{yes}|ooh|nice one] [{ok}|sounds proper good|book it|im easy] [haha|]")
    else:
        c.them(
            "[Lisbon in {mon}, can't wait!|Have you booked the time off for {mon}?|"
            "Flights are £{n}{m} at the moment.|Which area should we stay in?]",
            mon=month.capitalize(),
        )
        c.sam(
            "[yeah|booked it|not yet] [found a place in {bairro}|gaz says {mon} is fine|{ok}|cant wait] [haha|]",
            mon=month,
        )
        if c.chance(0.3):
            c.sam(
                "this one looks proper good https://www.example.com/stays/lisbon-{b}-{n}{m}{n}",
                b=c.pick("bairro").replace(" ", "-"),
            )


def ex_contact(c: Ctx) -> None:
    phone = f"07700 900{c.rng.randrange(1000):03d}"
    who = c.rng.choice(
        [w for w in ("dan", "alex", "priya", "gaz", "the plumber", "the vet", "jess") if w != c.friend.name.lower()]
    )
    if c.chance(0.5):
        c.them("[Have you got|Can you send me] {w}'s [number|new number]?", w=who.capitalize())
        c.sam("[yeah|] [its|] {p}", extend=False, p=c.rng.choice([phone, phone.replace(" ", ""), "+44 " + phone[1:]]))
        c.them("[Thanks!|Cheers.|Got it, ta.]")
    else:
        mail = c.rng.choice(["sam.rivers", "samr", "sam"]) + c.rng.choice(
            ["@example.com", "@example.org", "@chainline.example.co.uk"]
        )
        c.them("[What's your email again?|Where should I send the tickets?|Which email do you use now?]")
        c.sam("{m} [cheers|ta|] [x|]", extend=False, m=mail)


def ex_link(c: Ctx) -> None:
    ident = "".join(c.rng.choice("abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(11))
    url = c.rng.choice(
        [
            f"https://www.youtube.com/watch?v={ident}",
            f"https://maps.app.goo.gl/{ident[:8]}",
            f"https://tickets.example.com/event/{c.rng.randrange(10**6)}",
            f"https://www.example.com/recipes/{c.pick('dish').split()[-1]}-{ident[:4]}",
        ]
    )
    if c.chance(0.6):
        c.sam("[look at this|this is the one i meant|ha watch this|found it] {u}", u=url)
        c.them("[Haha brilliant.|Ooh yes.|Will watch later.|That's the one!]")
    else:
        c.them("[Look at this|Thought of you|This is the place I meant] {u}", u=url)
        c.sam("[{reaction}|ha class|ooh] [{ok}|]")


def ex_media(c: Ctx) -> None:
    if c.chance(0.5):
        c.turns.append((True, MEDIA))
        c.sam(
            "[biscuit {whenpast}|view from the shop|look at this {bike}|{dish} tonight|sunday league squad|"
            "new {part} finally came|the park {whenpast}|gaz asleep in the workshop|todays haul from the market] "
            "[haha|]"
        )
        c.them("{freact}")
    else:
        c.turns.append((False, MEDIA))
        c.sam("[{reaction}|ha class|love that] [{emoji}|]")


# fmt: off
EXCHANGES: dict[str, Exchange] = {
    "hello": ex_hello, "shop": ex_shop, "work": ex_work, "biscuit": ex_biscuit, "football": ex_football,
    "plan": ex_plan, "gig": ex_gig, "flat": ex_flat, "cook": ex_cook, "show": ex_show, "jess_news": ex_jess_news,
    "jess_ask": ex_jess_ask, "sam_news": ex_sam_news, "mum_check": ex_mum_check, "visit": ex_visit,
    "lisbon": ex_lisbon, "contact": ex_contact, "link": ex_link, "media": ex_media,
}
# fmt: on
# A sign-off alone would be the same few words every time: most run on from something else.
SIGNOFFS = [
    "{signoff}",
    "{signoff} {name}",
    "{ok} {signoff}",
    "{more} {signoff}",
    "{ok} [{name}|] {signoff}",
    "{more} {signoff} {name}",
    "[{more}|{ok}] [anyway|] {signoff}",
]
_EMOJI = re.compile("[\U0001f300-\U0001faff\u2600-\u27bf]")


def sam_voice(text: str, rng: random.Random) -> str:
    """Sam's habits over a raw line: no apostrophes, capitals rare, "haha", favourite emoji, no full stop."""
    text = text.replace("'", "")
    if not text.endswith("?") or rng.random() < 0.5:
        text = text.rstrip("?")  # he drops most question marks
    if "haha" not in text and rng.random() < 0.1:
        text = rng.choice(["haha ", "hahaha "]) + text if rng.random() < 0.4 else text + " haha"
    if not _EMOJI.search(text) and rng.random() < 0.03:
        text += " " + rng.choice(POOLS["emoji"])
    if rng.random() < 0.03:
        text += "."
    if rng.random() < 0.09:
        text = text[:1].upper() + text[1:]
    return text


def their_voice(text: str, friend: Friend, rng: random.Random) -> str:
    """A friend's line as written: standard spelling, their emoji rate, the odd lower-case one or signature."""
    if not _EMOJI.search(text) and rng.random() < friend.emoji_rate:
        text += " " + rng.choice(["😂", "😘", "❤️", "🙈", "😊", "👏", "🤞", "😅"])
    if friend.signature and rng.random() < 0.3:
        text += " " + friend.signature
    if rng.random() < friend.lower_rate:
        text = text[:1].lower() + text[1:].rstrip(".")
    return text


def conversation(friend: Friend, rng: random.Random) -> list[tuple[datetime, str, str]]:
    """The whole chat with ``friend``: (when, sender, text) in time order."""
    names, weights = list(friend.topics), list(friend.topics.values())
    lines: list[tuple[datetime, str, str]] = []
    last = datetime.combine(START, datetime.min.time())
    day = START
    said: set[str] = set()
    while day <= END:
        busy = 3.0 if LISBON_TRIP[0] - timedelta(days=5) <= day <= LISBON_TRIP[1] else 1.0
        if rng.random() < min(0.95, friend.per_week / 7 * busy):
            at = datetime.combine(day, datetime.min.time()) + timedelta(
                hours=rng.choice([8, 9, 12, 13, 17, 18, 19, 20, 21, 22]), minutes=rng.randrange(60)
            )
            at = max(at, last + timedelta(minutes=1))
            c = Ctx(rng, day, friend, said=said)
            for k in range(1 + min(3, int(rng.expovariate(1.0)))):
                name = rng.choices(names, weights)[0]
                while k and name == "hello":  # greetings open a session, never sit in the middle of one
                    name = rng.choices(names, weights)[0]
                EXCHANGES[name](c)
                c.turns.append((False, ""))  # a pause between exchanges
            if rng.random() < 0.35:
                c.turns.append((True, c.x(rng.choice(SIGNOFFS), name=friend.nickname)))
            prev_sam: bool | None = None
            for by_sam, raw in c.turns:
                if not raw:
                    at += timedelta(minutes=rng.randrange(5, 90))
                    continue
                at += timedelta(seconds=rng.randrange(5, 60) if by_sam == prev_sam else rng.randrange(30, 600))
                prev_sam = by_sam
                if raw == MEDIA:
                    text = "<Media omitted>" if friend.style == "android" else "\u200eimage omitted"
                else:
                    text = sam_voice(raw, rng) if by_sam else their_voice(raw, friend, rng)
                    if rng.random() < 0.01:
                        text += " <This message was edited>"
                lines.append((at, SAM if by_sam else friend.name, text))
                if not by_sam and rng.random() < 0.004:
                    at += timedelta(seconds=20)
                    lines.append((at, friend.name, "This message was deleted"))
            last = at
        day += timedelta(days=1)
    return lines


def render(friend: Friend, lines: list[tuple[datetime, str, str]]) -> str:
    """The export text: the encryption notice, then one line (or several, for multi-line text) a message."""

    def stamp(at: datetime) -> str:
        if friend.style == "android":
            return at.strftime("%d/%m/%Y, %H:%M - ")
        return at.strftime("[%d/%m/%Y, %H:%M:%S] ")

    first = lines[0][0] - timedelta(minutes=1)
    notice = (
        "Messages and calls are end-to-end encrypted. No one outside of this chat, not even WhatsApp, "
        "can read or listen to them."
    )
    head = stamp(first) + notice if friend.style == "android" else f"{stamp(first)}{friend.name}: \u200e{notice}"
    return "\n".join([head, *(f"{stamp(at)}{who}: {text}" for at, who, text in lines)]) + "\n"


def generate(out: Path, seed: int = SEED) -> dict[str, tuple[int, int]]:
    """Write the five exports under ``out``; returns {friend: (Sam's messages, theirs)} (placeholders counted)."""
    out.mkdir(parents=True, exist_ok=True)
    counts: dict[str, tuple[int, int]] = {}
    for i, friend in enumerate(FRIENDS):
        lines = conversation(friend, random.Random(seed * 1000 + i))
        (out / f"WhatsApp Chat with {friend.name}.txt").write_text(render(friend, lines), encoding="utf-8")
        sam = sum(who == SAM for _, who, _ in lines)
        counts[friend.name] = (sam, len(lines) - sam)
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    counts = generate(args.out, args.seed)
    for name, (sam, theirs) in counts.items():
        print(f"{name:6} Sam {sam:5}  {name} {theirs:5}")
    total = collections.Counter(
        {"sam": sum(s for s, _ in counts.values()), "others": sum(t for _, t in counts.values())}
    )
    print(f"total  Sam {total['sam']:5}  others {total['others']:5}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
