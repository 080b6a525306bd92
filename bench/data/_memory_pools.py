"""The word pools and fact templates of `bench.data.memory_history` (data only; the logic lives there).

Template text is written in normal case; Maya's lines are made casual (lower case, no apostrophes) when they
are said. Slots: ``{v}`` is the fact's value, drawn from ``POOLS[pool]`` without replacement across the whole
history (so no two facts share a value); ``{old}`` the value it replaces; ``{name}`` a person from
``POOLS["name"]``; ``{when}`` a date phrase made for the message's own day; any other ``{slot}`` in a story is
drawn once per story from the pool of that name. In a story step, «guillemets» mark the key phrase that the
open question's gold summary quotes, and `` || `` separates variants of the step.

The ``NEVER_*`` pools are the unanswerable questions' subjects: they occur in no template, pool or filler line.
"""

from __future__ import annotations

from dataclasses import dataclass

CONTACTS = ("Lena", "Noor", "Jonas", "Dad")  # sister, best friend, colleague, father


@dataclass(frozen=True, slots=True)
class Line:
    """A planted message as a template: the chat it is said in, whether Maya says it, its text."""

    chat: str
    me: bool
    text: str


@dataclass(frozen=True, slots=True)
class SingleT:
    """One message states a value; the question asks for it."""

    line: Line
    pool: str
    questions: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ChangeT:
    """A value stated early (``first``) and replaced later (``then``); the question asks for the current one."""

    first: Line
    then: Line
    pool: str
    questions: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class WhenT:
    """An event stated with a date phrase (``{when}``) relative to the message's day, or absolute."""

    line: Line
    future: bool
    questions: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class MovedT:
    """A planned date (``first``, absolute) that moves before it happens (``then``)."""

    first: Line
    then: Line
    questions: tuple[str, ...]
    relative: bool  # whether ``then`` may say the new date relatively ("next Tuesday"), not just "on 3 May"


@dataclass(frozen=True, slots=True)
class RoleT:
    """Message A of a two-message fact: who a person (``{name}``) is; ``role`` is how a question names them."""

    line: Line
    role: str


@dataclass(frozen=True, slots=True)
class PredicateT:
    """Message B of a two-message fact: something about ``{name}``, without saying who they are."""

    text: str
    pool: str
    questions: tuple[str, ...]  # ``{role}`` is the RoleT's role


@dataclass(frozen=True, slots=True)
class StoryT:
    """A storyline told by its owner over several sessions; ``{poss}`` in a question is "my" or "Lena's"."""

    owners: tuple[str, ...]  # "me" or a contact
    steps: tuple[str, ...]
    questions: tuple[str, ...]


# Word tables, kept dense: one entry a line would triple the file.
# fmt: off
POOLS: dict[str, tuple[str, ...]] = {
    "city": ("Gdansk", "Porto", "Utrecht", "Bologna", "Tallinn", "Lyon", "Ghent", "Bergen", "Seville", "Krakow",
             "Galway", "Aarhus", "Trieste", "Leipzig", "Nantes", "Zagreb", "Salzburg", "Malmo", "Ljubljana",
             "Bilbao", "Turin", "Rotterdam", "Vilnius", "Bordeaux"),
    "company": ("Kestrel Labs", "Copperleaf", "Northwind Studio", "Halcyon Health", "Fable Books", "Orbital Maps",
                "Bramblewood", "Lumen Analytics", "Harbourline", "Pinecrest Bank", "Saltmarsh Media",
                "Tangent Robotics", "Quill and Co", "Bluebell Foods", "Ferrous Works", "Meridian Games"),
    "name": ("Tomasz", "Ines", "Marek", "Ayesha", "Callum", "Freya", "Dmitri", "Rosa", "Kwame", "Hana", "Oskar",
             "Leila", "Bram", "Siobhan", "Teodor", "Yara", "Emeka", "Greta", "Idris", "Mireille", "Rafael",
             "Saskia", "Tariq", "Wren", "Anouk", "Niamh", "Soren", "Priyanka", "Lukas", "Elif"),
    "surname": ("Okafor", "Lindqvist", "Brennan", "Moreau", "Castellano", "Nakamura", "Petrov", "Achterberg"),
    "studio": ("Clay Corner", "the Kiln Room", "Mud and Fire", "Wheelhouse Studio", "Slipware Studio",
               "Bisque Street"),
    "holiday": ("Crete", "Mallorca", "the Algarve", "Sicily", "Brittany", "the Dolomites", "Madeira", "Corsica"),
    "band": ("Paper Harbour", "Moth Radio", "Kid Satellite", "The Hollow Pines", "Neon Orchard",
             "Glasshouse Choir"),
    "number": ("47", "112", "23", "86", "131", "64", "208", "19"),
    "book": ("A Map of Small Rivers", "The Glass Orchard", "Winter at Hollow Farm", "The Quiet Engineer",
             "Salt and Ember", "The Last Ferry", "Lanterns in the Fog"),
    "title": ("Head of Partnerships", "Senior Data Analyst", "Operations Lead", "Product Owner",
              "Research Manager", "Events Coordinator"),
    "venue": ("Ashton Court", "the Watershed", "Arnos Vale", "Goldney Hall", "the Scout hut",
              "the Friends Meeting House", "the Old Library", "the Mill Theatre", "the Boathouse",
              "the Corn Exchange"),
    "project": ("checkout", "onboarding", "billing", "loyalty app", "help centre", "dashboard", "booking flow"),
    "gift": ("telescope", "drum kit", "hamster", "skateboard", "microscope", "keyboard"),
    "race": ("Bath Half", "Cardiff 10k", "Bristol 10k", "Severn Bridge Half", "Cotswold Relay", "Great North Run"),
    "plant": ("dahlias", "sweet peas", "runner beans", "tulips", "lavender", "sunflowers"),
    "place": ("Lisbon", "Vienna", "Edinburgh", "Copenhagen", "Prague", "Budapest", "Athens", "Florence",
              "Barcelona", "Amsterdam"),
    "bike": ("Brompton", "gravel bike", "Dutch bike", "road bike", "cargo bike"),
    "club": ("chess", "walking", "bridge", "local history", "crossword", "poetry"),
    "car": ("Skoda Fabia", "Fiat Panda", "Toyota Yaris", "Honda Jazz", "Mini Cooper", "Renault Clio",
            "Kia Picanto", "VW Polo", "Nissan Leaf", "Ford Fiesta"),
    "pet": ("Miso", "Pip", "Juniper", "Pickle", "Tofu", "Waffles", "Clementine", "Nacho", "Pesto",
            "Ziggy", "Mochi", "Pudding"),
    "instrument": ("cello", "ukulele", "trombone", "banjo", "harp", "accordion", "double bass", "mandolin"),
    "language": ("Portuguese", "Japanese", "Welsh", "Korean", "Dutch", "Greek", "Turkish", "Swahili"),
    "animal": ("greyhound", "rescue cat", "rabbit", "parrot", "ferret", "guinea pig", "beagle", "lurcher"),
    "baby": ("Olive", "Rumi", "Matilda", "Ezra", "Isla", "Theo", "Ada", "Arlo"),
    "restaurant": ("Casa Lupita", "Ember and Oak", "The Blue Finch", "Little Saigon Kitchen", "Pho Real",
                   "Salt Cellar", "Green Fig", "Nonna Bea"),
    "street": ("Cotham Road", "Elm Terrace", "Wellington Street", "Harbour Lane", "Orchard Row", "Mill Street",
               "Ashley Grove", "Chandos Road"),
    "road": ("M5", "A38", "M4", "A37", "M32"),
    "carpart": ("alternator", "clutch", "starter motor", "timing belt", "radiator", "fuel pump"),
    "cost": ("180", "240", "320", "450", "95", "610"),
    "bodypart": ("ankle", "wrist", "shoulder", "hamstring", "elbow"),
    "activity": ("playing tennis", "at the climbing wall", "on a trail run", "playing five-a-side",
                 "at badminton"),
    "injury": ("sprain", "hairline fracture", "torn ligament", "pulled tendon"),
    "colour": ("sage green", "navy", "cream", "terracotta", "charcoal"),
    "fault": ("damp behind the sink", "rotten floorboards", "ancient wiring", "a leaking pipe"),
    "highlight": ("the food market", "a boat trip", "the old town", "the botanical garden", "a cooking class"),
    "course": ("Spanish", "first aid", "photography", "woodwork", "coding", "bookkeeping"),
    "chewed": ("the sofa", "a shoe", "the skirting board", "the remote", "a cushion"),
    "who": ("Gran", "Uncle Rob", "Auntie Jo", "Grandpa Will", "Cousin Nell"),
    "cause": ("a cracked tile", "a blocked gutter", "a loose flashing", "a split valley"),
    "spot": ("the station", "the gym", "the library", "the supermarket", "the cinema"),
    "time": ("31 minutes", "28 minutes", "33 minutes", "29 minutes"),
    "pb": ("26 minutes", "25 minutes", "27 minutes", "24 minutes"),
}

SINGLES = (
    SingleT(Line("Lena", True, "Signed up for pottery classes at {v}! So excited."), "studio",
            ("Where am I doing pottery classes?", "Which studio did I sign up to for pottery?")),
    SingleT(Line("Lena", False, "My friend Hattie got the job in {v}, she moves in the autumn."), "city",
            ("Where did Lena's friend Hattie get a job?", "Which city is Hattie's new job in?")),
    SingleT(Line("Lena", False, "We've booked the summer holiday, two weeks in {v}!"), "holiday",
            ("Where is Lena going on her summer holiday?", "Where did Lena book the summer holiday?")),
    SingleT(Line("Lena", True, "Finally named my sourdough starter, it's called {v}."), "pet",
            ("What did I name my sourdough starter?",)),
    SingleT(Line("Lena", False, "Ellie's favourite book at the moment is {v}."), "book",
            ("What's Ellie's favourite book at the moment?",)),
    SingleT(Line("Noor", False, "That band we saw were called {v}, I'm obsessed now."), "band",
            ("What was the band Noor and I saw called?", "What's the name of the band Noor is obsessed with?")),
    SingleT(Line("Noor", True, "My gym locker is number {v}, telling you so one of us remembers."), "number",
            ("What's my gym locker number?",)),
    SingleT(Line("Noor", True, "Reading {v} for book club, it's so good."), "book",
            ("Which book am I reading for book club?",)),
    SingleT(Line("Noor", False, "My new job title is {v}, fancy or what?"), "title",
            ("What's Noor's new job title?",)),
    SingleT(Line("Noor", False, "My cousin's wedding is going to be in {v}."), "place",
            ("Where is Noor's cousin getting married?",)),
    SingleT(Line("Noor", True, "My new dentist is Dr {v}, way nicer than the old one."), "surname",
            ("What's my new dentist called?", "Who is my dentist now?")),
    SingleT(Line("Jonas", False, "The new client is {v}, kickoff is soon."), "company",
            ("Who's the new client Jonas told me about?", "Which company is our new client?")),
    SingleT(Line("Jonas", False, "The team offsite is going to be at {v}."), "venue",
            ("Where's the team offsite?",)),
    SingleT(Line("Jonas", True, "I'm presenting the {v} redesign at the all-hands."), "project",
            ("Which redesign am I presenting at the all-hands?",)),
    SingleT(Line("Jonas", False, "My daughter wants a {v} for her birthday."), "gift",
            ("What does Jonas's daughter want for her birthday?",)),
    SingleT(Line("Jonas", False, "I'm training for the {v}, legs are dead."), "race",
            ("What race is Jonas training for?",)),
    SingleT(Line("Jonas", False, "We're moving office to {v} in the spring."), "street",
            ("Which street is the new office on?",)),
    SingleT(Line("Dad", False, "The surgeon is a Mr {v}, very nice man."), "surname",
            ("What's Dad's surgeon called?",)),
    SingleT(Line("Dad", False, "I've planted {v} in the front bed this year."), "plant",
            ("What did Dad plant in the front bed?",)),
    SingleT(Line("Dad", False, "Your aunt Carmen sent me a postcard from {v}."), "place",
            ("Where did Aunt Carmen's postcard come from?",)),
    SingleT(Line("Dad", True, "Got a new bike, a {v}! So happy with it."), "bike",
            ("What kind of bike did I get?",)),
    SingleT(Line("Dad", False, "I've joined the {v} club at the library."), "club",
            ("Which club did Dad join at the library?",)),
)

CHANGES = (
    ChangeT(Line("Lena", False, "I've started at {v}, first week went well!"),
            Line("Lena", False, "I handed my notice in at {old}. Starting at {v} next month!"), "company",
            ("Where does Lena work now?", "Who is Lena working for these days?")),
    ChangeT(Line("Lena", False, "We're staying in {v} for now, the flat is fine."),
            Line("Lena", False, "It's official, we're leaving {old} and moving to {v}!"), "city",
            ("Where does Lena live now?", "Which city is Lena living in now?")),
    ChangeT(Line("Noor", False, "We've called the puppy {v}!"),
            Line("Noor", False, "We've renamed the puppy {v}, {old} just didn't suit him."), "pet",
            ("What's Noor's puppy called now?", "What's the name of Noor's dog?")),
    ChangeT(Line("Noor", True, "Picked up my {v} today, first car ever!"),
            Line("Noor", True, "Sold the {old}, got a {v} instead."), "car",
            ("What car do I drive now?", "What car have I got at the moment?")),
    ChangeT(Line("Jonas", False, "{v} is going to be our team lead."),
            Line("Jonas", False, "{old} is leaving, {v} is taking over as team lead."), "name",
            ("Who's our team lead now?",)),
    ChangeT(Line("Dad", False, "The choir practises at {v} on Tuesdays."),
            Line("Dad", False, "The choir has moved from {old} to {v}."), "venue",
            ("Where does Dad's choir practise now?",)),
    ChangeT(Line("Noor", False, "My new flatmate is {v}, seems sound."),
            Line("Noor", False, "{old} moved out, {v} has the room now."), "name",
            ("Who is Noor's flatmate now?", "Who lives with Noor at the moment?")),
    ChangeT(Line("Jonas", True, "I'm on the {v} project now."),
            Line("Jonas", True, "Got moved off {old}, I'm on {v} now."), "project",
            ("Which project am I on now?", "What project am I working on at the moment?")),
)

WHENS = (
    WhenT(Line("Dad", False, "I had my knee operation {when}. All went well."), False,
          ("When did Dad have his knee operation?", "When was Dad's knee operation?")),
    WhenT(Line("Dad", False, "The boiler man came {when}, all fixed now."), False,
          ("When did Dad get the boiler fixed?",)),
    WhenT(Line("Dad", False, "I've got my eye test {when}."), True, ("When was Dad's eye test?",)),
    WhenT(Line("Dad", False, "The new fence went up {when}."), False, ("When did Dad's new fence go up?",)),
    WhenT(Line("Dad", False, "The car goes in for its MOT {when}."), True, ("When was Dad's car MOT?",)),
    WhenT(Line("Dad", True, "I'll drive down to see you {when}."), True,
          ("When did I say I'd drive down to see Dad?",)),
    WhenT(Line("Dad", False, "I got my flu jab {when}."), False, ("When did Dad get his flu jab?",)),
    WhenT(Line("Lena", False, "My job interview is {when}, wish me luck!"), True,
          ("When was Lena's job interview?",)),
    WhenT(Line("Lena", False, "Ellie lost her first tooth {when}!"), False,
          ("When did Ellie lose her first tooth?",)),
    WhenT(Line("Lena", False, "We had the scan {when}, all looks good."), False, ("When was Lena's scan?",)),
    WhenT(Line("Lena", True, "Got my hair cut {when}, bit short."), False, ("When did I get my hair cut?",)),
    WhenT(Line("Lena", True, "My pottery exhibition is {when}, come if you can."), True,
          ("When was my pottery exhibition?",)),
    WhenT(Line("Lena", False, "Ellie's school play is {when}."), True, ("When was Ellie's school play?",)),
    WhenT(Line("Noor", False, "I got my exam results {when}, I passed!"), False,
          ("When did Noor get her exam results?",)),
    WhenT(Line("Noor", True, "Ran my first 10k {when}, dying."), False, ("When did I run my first 10k?",)),
    WhenT(Line("Noor", False, "Housewarming is {when}, you're coming right?"), True,
          ("When was Noor's housewarming?",)),
    WhenT(Line("Noor", True, "Smashed my phone screen {when}, ugh."), False,
          ("When did I smash my phone screen?",)),
    WhenT(Line("Noor", False, "We got back from Cornwall {when}."), False, ("When did Noor get back from Cornwall?",)),
    WhenT(Line("Noor", True, "Booked the comedy gig, it's {when}."), True, ("When was the comedy gig I booked?",)),
    WhenT(Line("Noor", False, "I start my new job {when}."), True, ("When did Noor start her new job?",)),
    WhenT(Line("Jonas", False, "The server migration is {when}."), True, ("When was the server migration?",)),
    WhenT(Line("Jonas", False, "I handed in the quarterly report {when}."), False,
          ("When did Jonas hand in the quarterly report?",)),
    WhenT(Line("Jonas", True, "My annual leave starts {when}."), True, ("When did my annual leave start?",)),
    WhenT(Line("Jonas", False, "My son was born {when}! 3.4 kg and loud."), False,
          ("When was Jonas's son born?",)),
    WhenT(Line("Jonas", True, "Had my performance review {when}, went fine."), False,
          ("When was my performance review?",)),
    WhenT(Line("Jonas", False, "The fire drill is {when} at 11."), True, ("When was the fire drill at work?",)),
)

MOVED = (
    MovedT(Line("Noor", False, "We've set a date, the wedding is {when}!"),
           Line("Noor", False, "We've had to move the wedding, it's now {when}. The venue double-booked."),
           ("When is Noor's wedding?", "What's the date of Noor's wedding?"), False),
    MovedT(Line("Lena", False, "I'm coming to stay with you {when}."),
           Line("Lena", False, "Change of plan, I'll come to stay {when} instead."),
           ("When did Lena come to stay with me?",), True),
    MovedT(Line("Noor", True, "Dentist appointment is {when}, dreading it."),
           Line("Noor", True, "Dentist moved my appointment, it's {when} now."),
           ("When was my dentist appointment?",), True),
    MovedT(Line("Jonas", False, "The app launch is {when}."),
           Line("Jonas", False, "The launch has slipped, it's {when} now."),
           ("When is the app launch?", "What's the launch date for the app?"), False),
)

ROLES = (
    RoleT(Line("Lena", True, "My new neighbour is called {name}, seems really nice."), "my neighbour"),
    RoleT(Line("Noor", True, "My pottery teacher is called {name}, love her."), "my pottery teacher"),
    RoleT(Line("Jonas", True, "The new intern on our floor is called {name}."), "the new intern"),
    RoleT(Line("Dad", True, "My landlord is called {name} by the way."), "my landlord"),
    RoleT(Line("Lena", False, "Ellie's teacher this year is called {name}."), "Ellie's teacher"),
    RoleT(Line("Lena", False, "Our new childminder is called {name}."), "Lena's childminder"),
    RoleT(Line("Noor", False, "My new boss is called {name}."), "Noor's boss"),
    RoleT(Line("Noor", False, "My brother's new girlfriend is called {name}."), "Noor's brother's girlfriend"),
    RoleT(Line("Jonas", False, "The contractor on the payments work is called {name}."), "the payments contractor"),
    RoleT(Line("Jonas", False, "Our new product manager is called {name}."), "our new product manager"),
    RoleT(Line("Dad", False, "My physio is called {name}."), "Dad's physio"),
    RoleT(Line("Dad", False, "The new neighbour at number 9 is called {name}."), "Dad's new neighbour"),
    RoleT(Line("Dad", False, "The chap who runs the choir is called {name}."), "Dad's choir leader"),
    RoleT(Line("Lena", False, "My running partner is called {name}."), "Lena's running partner"),
    RoleT(Line("Noor", False, "My yoga teacher is called {name}."), "Noor's yoga teacher"),
)

PREDICATES = (
    PredicateT("{name} is moving to {v}.", "city", ("Where is {role} moving to?", "Which city is {role} moving to?")),
    PredicateT("{name} got a job at {v}.", "company", ("Where did {role} get a job?", "Which company hired {role}?")),
    PredicateT("Turns out {name} is originally from {v}.", "city",
               ("Where is {role} from?", "Which city is {role} originally from?")),
    PredicateT("{name} just bought a {v}.", "car", ("What car did {role} buy?",)),
    PredicateT("{name} plays the {v} in a folk band.", "instrument", ("What instrument does {role} play?",)),
    PredicateT("{name} is learning {v}.", "language", ("What language is {role} learning?",)),
    PredicateT("{name} got a {v}.", "animal", ("What pet did {role} get?", "What kind of animal did {role} get?")),
    PredicateT("{name} is a parent now, the baby is called {v}.", "baby",
               ("What's the name of {role}'s baby?", "What did {role} call the baby?")),
    PredicateT("{name} is running the {v}.", "race", ("Which race is {role} running?",)),
    PredicateT("{name} is opening a restaurant called {v}.", "restaurant",
               ("What's the name of the restaurant {role} is opening?",)),
)
B_OPENERS = ("Guess what, ", "Did I tell you? ", "", "Oh, and ", "News: ")

STORIES = (
    StoryT(("me", "Noor"), (
        "We «viewed a flat on {street}» today, it's really bright.",
        "We «put in an offer on the {street} flat».",
        "«the offer was accepted»! || «the offer was turned down», someone bid higher.",
        "We «got the keys» this morning! || We «found another flat nearby» instead.",
    ), ("What happened with {poss} flat hunt?", "How did {poss} flat hunt go?")),
    StoryT(("Dad", "Jonas"), (
        "The car «broke down on the {road}» on the way home.",
        "The garage says «it's the {carpart}».",
        "Got the car back, «it cost £{cost} to fix».",
    ), ("What happened with {poss} car?", "What went wrong with {poss} car?")),
    StoryT(("me", "Noor", "Lena"), (
        "I «hurt my {bodypart} {activity}».",
        "The doctor said «it's a {injury}».",
        "I'm «doing physio twice a week» now.",
        "«back to normal» finally, no more {bodypart} pain!",
    ), ("What happened with {poss} {bodypart}?", "How's {poss} {bodypart} injury?")),
    StoryT(("Dad", "Lena", "Jonas"), (
        "I've «started redoing the kitchen».",
        "The builders «found {fault}».",
        "We «went with {colour} cupboards».",
        "The «kitchen is finally finished»!",
    ), ("What happened with {poss} kitchen renovation?", "How did {poss} kitchen renovation go?")),
    StoryT(("me", "Noor", "Jonas", "Lena"), (
        "We «booked a trip to {place}»!",
        "«the flights got cancelled», nightmare.",
        "We «rebooked for the week after».",
        "Back home, «the best bit was {highlight}».",
    ), ("What happened with {poss} trip to {place}?", "How did {poss} {place} trip go?")),
    StoryT(("Lena", "Jonas", "Dad"), (
        "We're «thinking about getting a {animal}».",
        "We «picked up a {animal} from the rescue» today!",
        "We've «named her {pet}».",
        "{pet} «chewed {chewed}», of course.",
    ), ("Tell me about {poss} new pet.", "What's the story with {poss} new pet?")),
    StoryT(("me", "Noor", "Dad"), (
        "I «signed up for a {course} course».",
        "«the first class was a disaster» haha. || «the first class was brilliant».",
        "I «passed the {course} exam»!",
    ), ("How did {poss} {course} course go?", "What happened with {poss} {course} course?")),
    StoryT(("Noor", "Jonas"), (
        "I «applied for a job at {company}».",
        "I «got a second interview» with them!",
        "They «offered me the job» and I took it! || I «turned the offer down», the salary was too low.",
    ), ("What happened with {poss} application to {company}?", "How did {poss} job application go?")),
    StoryT(("me", "Lena", "Noor"), (
        "We're «throwing a surprise party for {who}».",
        "I «booked {venue} for the party».",
        "«{who} had no idea»! Best night.",
    ), ("How did {poss} surprise party go?", "What happened with {poss} surprise party for {who}?")),
    StoryT(("Dad", "Lena", "me"), (
        "«the ceiling started leaking» in the bathroom.",
        "The roofer came and «found {cause}».",
        "«the roof is fixed» at last.",
    ), ("What happened with {poss} leaking ceiling?", "How did {poss} roof leak get sorted?")),
    StoryT(("me", "Noor", "Jonas"), (
        "My bike «got stolen outside {spot}».",
        "I «reported it to the police».",
        "«the police found it» in a hedge! || «still no sign of it», I've given up.",
    ), ("What happened to {poss} stolen bike?", "Did {poss} stolen bike ever turn up?")),
    StoryT(("Lena", "Dad", "Jonas"), (
        "I've «joined a running club».",
        "«did my first parkrun in {time}».",
        "«got a new personal best of {pb}»!",
    ), ("How's {poss} running going?", "How is {poss} running club going?")),
)

# Unanswerable questions: {c} a contact, {name}/{place}/{animal} one subject from the NEVER pools.
ABSENT = (
    "When did {c} go to {place}?", "What did I think of {place}?", "How is my cousin {name} getting on?",
    "When is {name}'s birthday?", "Where does {c}'s friend {name} work?", "What did {name} say about the party?",
    "Which hotel did we stay at in {place}?", "When is {c} flying to {place}?", "What's {name}'s phone number?",
    "Did {name} ever pay me back?", "What did {c} buy in {place}?", "Where did I meet {name}?",
    "What's the name of {c}'s {animal}?", "What restaurant did {name} recommend?", "How was {c}'s trip to {place}?",
)
NEVER: dict[str, tuple[str, ...]] = {
    "name": ("Ignacio", "Beatriz", "Florian", "Agnieszka", "Matteo", "Ottilie", "Bartholomew", "Zuzana", "Cormac",
             "Henrietta", "Lorcan", "Valentina", "Fenella", "Casimir", "Philippa", "Ruaridh"),
    "place": ("Reykjavik", "Marrakech", "Lake Bled", "Santorini", "Kyoto", "Patagonia", "Dubrovnik", "Tromso",
              "Zanzibar", "Havana", "Oaxaca", "Hokkaido", "Cappadocia", "Tasmania", "Montreal", "Valparaiso"),
    "animal": ("tortoise", "iguana", "pony", "goldfish", "cockatoo", "chinchilla"),
}

# Small talk. An exchange is turns joined by " / "; a turn is "T:" (the contact) or "M:" (Maya) and
# alternatives joined by "|"; {slot}s come from FILL. "*" is shared by every chat.
FILLER: dict[str, tuple[str, ...]] = {
    "*": (
        "T:How's your week going?|How are things?|You alright?|How's everything? / M:{mstatus} / T:{tstatus}",
        "M:what are you having for dinner|whats for tea tonight / T:Probably {dish}.|Just {dish}, nothing fancy. / "
        "M:{mreact}",
        "T:Have you started watching {show}?|Are you still watching {show}? / M:yes obsessed|not yet, is it good|"
        "on episode {n} / T:It's so good.|No spoilers then!|The last episode was wild.",
        "M:{mweather} / T:{tweather}",
        "T:{ttired} / M:{mcomfort}",
        "M:{mtired} / T:{tcomfort}",
        "T:Any plans for the weekend? / M:not really, just chilling|might see some friends|cleaning the flat lol|"
        "sleeping mostly / T:Sounds nice.|Fair enough!|Sounds perfect.",
        "M:made {dish} last night|tried a new recipe, {dish} / T:Yum.|Recipe please!|Fancy!",
        "T:Did you sleep ok?|Are you feeling better? / M:{mstatus} / T:Good.|Glad to hear it.",
        "M:this week is flying by / T:I know, where does the time go?|Same, it's mad.",
        "T:I'm so full, just had {dish}. / M:{mreact}",
        "M:listening to that podcast you sent|finally cleaned the bathroom / T:Ha, nice.|Finally!|About time.",
    ),
    "Lena": (
        "T:Ellie says hi!|Ellie drew you a picture. / M:aww hi ellie|tell her i love it|miss her",
        "T:Have you spoken to Dad this week?|Dad sounded tired on the phone. / M:yeah yesterday|not yet, will ring "
        "him|hes fine i think / T:Ok good.|Let me know.",
        "M:remember that time we got lost on the beach|found our old photos / T:Haha yes!|Oh god, those haircuts.",
    ),
    "Noor": (
        "T:Coffee soon?|We need a catch up. / M:yes please|definitely, next week? / T:Deal.|Can't wait.",
        "M:that voice note made me laugh so much / T:Ha, I aim to please.",
        "T:Gym later?|Are you going to spin class? / M:maybe|if i can drag myself there|no way im dead / T:Ha ok.",
    ),
    "Jonas": (
        "T:Standup is at 10 tomorrow.|Did you see the email about timesheets?|Can you look at my slides later? / "
        "M:yep|will do|on it / T:Thanks!|Cheers.",
        "M:this meeting could have been an email / T:Ha, every single one.",
        "T:Coffee run? / M:yes please, oat flat white / T:On it.",
        "T:The printer is broken again. / M:of course it is / T:Classic.",
    ),
    "Dad": (
        "T:Are you eating properly?|Call me when you have a minute.|Don't forget to ring your sister. / "
        "M:yes dad|will do x|haha yes / T:Good. Love you.|Speak soon, love Dad.",
        "T:The garden is looking lovely.|The cat from next door is back again. / M:aww|haha classic|nice one dad",
        "T:Did you see the football? / M:no i never watch it dad / T:Ha, one day.",
    ),
}
GREETINGS = (
    "T:Hey!|Hi love|Morning!|Hiya|Hello you / M:hey!|hiii|morning|heyy",
    "M:hey|hiya|morning! / T:Hi!|Hey you.|Morning!|Hello!",
)
SIGNOFFS = ("M:night x|speak soon|gotta go, talk later|love you x|ok bye x", "T:Night!|Speak soon.|Talk later x")
ACKS = {
    True: ("oh really", "ah ok", "wow", "omg", "noted", "ahh", "good to know", "oh wow"),
    False: ("Oh really?", "Ah okay.", "Good to know.", "Wow.", "Noted!", "Oh I see.", "Right!"),
}
FILL: dict[str, tuple[str, ...]] = {
    "mstatus": ("good thanks, bit tired", "all good here", "surviving lol", "not bad hbu", "meh its been a week",
                "pretty good actually", "so busy but fine"),
    "tstatus": ("Good, busy as always.", "Not bad at all.", "All good here.", "Tired but fine.", "Can't complain!"),
    "mreact": ("nice", "ooh", "yum", "love that", "haha amazing", "jealous", "fair"),
    "dish": ("pasta", "a curry", "soup", "a stir fry", "tacos", "risotto", "a big salad", "leftovers", "a pie"),
    "show": ("The Bear", "Slow Horses", "Taskmaster", "The Traitors", "Bake Off", "that new crime drama"),
    "n": ("2", "3", "4", "5", "6"),
    "mweather": ("its pouring here", "so sunny today", "freezing this morning", "the wind is mad today"),
    "tweather": ("Same here.", "Lucky you, grey here.", "Wrap up!", "Typical."),
    "ttired": ("I'm exhausted.", "Long day.", "What a week.", "I need a holiday."),
    "mcomfort": ("same tbh", "go to bed early", "sending hugs", "nearly the weekend"),
    "mtired": ("so tired today", "long day", "need a nap", "brain is fried"),
    "tcomfort": ("Early night!", "Have a bath.", "Nearly the weekend.", "Poor you."),
}
# fmt: on
