"""A generated chat history with a recognisable writer, for the persona tests (no personal data checked in).

"sam" never writes a capital letter, ends most messages with "cheers", laughs with 😂, loves hiking and
football, writes mostly English and sometimes Portuguese, and chats with Ana Souza and Bob about Porto and
Lisbon. Deterministic: the same export every time.
"""

from __future__ import annotations

from datetime import datetime, timedelta

ME = "Sam Rivers"
PARTNERS = ("Ana Souza", "Bob")

BODIES = (
    "heading out hiking in the hills this weekend",
    "did you see the football last night, what a game",
    "the hiking trail near porto was amazing",
    "going to lisbon next week for the football derby",
    "see you at the trailhead at nine",
    "my new hiking boots arrived today",
    "football practice moved to thursday",
    "we should go hiking again soon",
    "flying to porto on friday morning",
    "that football match was unreal",
    "the hiking map is in my bag",
    "lunch in lisbon was great",
    "can you bring the big tent for the hiking trip",
    "watching the football with dad tonight",
    "my knee hurts after all that hiking",
    "booked the train to porto",
    "the football tickets were sold out",
    "up early for a long hike",
    "rain again, hiking is off",
    "who is playing football on sunday",
)
PORTUGUESE = (
    "vamos fazer uma caminhada no sábado de manhã",
    "o jogo de futebol foi muito bom ontem à noite",
    "estou a chegar ao porto daqui a pouco",
    "amanhã vou ver o futebol com o meu pai",
)
OTHERS = (
    "Sounds great! When are you back?",
    "Haha, you and your hiking.",
    "Did you book the train?",
    "Say hi to everyone from me.",
    "Are you free on Saturday?",
)


def sam_line(n: int) -> str:
    """Sam's ``n``-th message: mostly English (every fifth Portuguese), "hey" in front of every fourth,
    "cheers" after two of every three, 😂 or ❤️ in every third, "no worries" now and then."""
    body = PORTUGUESE[(n // 5) % len(PORTUGUESE)] if n % 5 == 4 else BODIES[(n * 7) % len(BODIES)]
    if n % 4 == 0:
        body = "hey " + body
    if n % 6 == 1:
        body += ", no worries"
    if n % 3 == 0:
        body += " 😂" if n % 2 else " ❤️"
    if n % 3 != 2:
        body += " cheers"
    return body


def sam_messages(count: int = 150) -> list[tuple[str, str]]:
    """(sender, text) pairs in chat order: ``count`` of Sam's messages, each answered by Ana Souza or Bob."""
    out: list[tuple[str, str]] = []
    for n in range(count):
        out.append((ME, sam_line(n)))
        out.append((PARTNERS[n % 2], OTHERS[n % len(OTHERS)]))
    return out


def whatsapp_export(count: int = 150) -> bytes:
    """`sam_messages` as a WhatsApp Android (24 h) export file."""
    start = datetime(2024, 3, 1, 9, 0)
    lines = []
    for n, (sender, text) in enumerate(sam_messages(count)):
        at = start + timedelta(minutes=7 * n)
        lines.append(f"{at:%d/%m/%Y, %H:%M} - {sender}: {text}\n")
    return "".join(lines).encode()


# Chat-like messages for measuring language identification (written for these tests; 12 per language).
LANGUAGE_SAMPLES: dict[str, tuple[str, ...]] = {
    "en": (
        "are you coming to the party tonight",
        "i just got home, so tired",
        "can you send me the photos later",
        "that movie was way better than i expected",
        "let me know when you are free this week",
        "we should grab a coffee sometime",
        "my phone died, sorry for the late reply",
        "happy birthday, have a great day",
        "traffic is terrible, running ten minutes late",
        "did you remember to buy milk",
        "the kids loved the beach today",
        "thanks for dinner last night, it was lovely",
    ),
    "pt": (
        "vais à festa hoje à noite",
        "acabei de chegar a casa, estou cansado",
        "podes mandar-me as fotos depois",
        "o filme foi muito melhor do que eu esperava",
        "avisa-me quando estiveres livre esta semana",
        "temos de tomar um café um dia destes",
        "fiquei sem bateria, desculpa a demora",
        "parabéns, tem um ótimo dia",
        "o trânsito está horrível, vou chegar atrasado",
        "lembraste de comprar leite",
        "os miúdos adoraram a praia hoje",
        "obrigado pelo jantar de ontem, estava ótimo",
    ),
    "es": (
        "vienes a la fiesta esta noche",
        "acabo de llegar a casa, estoy muy cansado",
        "me puedes mandar las fotos luego",
        "la película fue mucho mejor de lo que esperaba",
        "avísame cuando tengas tiempo esta semana",
        "tenemos que tomar un café algún día",
        "se me murió el móvil, perdón por tardar",
        "feliz cumpleaños, que lo pases genial",
        "hay muchísimo tráfico, llego diez minutos tarde",
        "te acordaste de comprar leche",
        "a los niños les encantó la playa hoy",
        "gracias por la cena de anoche, estuvo riquísima",
    ),
    "fr": (
        "tu viens à la fête ce soir",
        "je viens de rentrer, je suis crevé",
        "tu peux m'envoyer les photos plus tard",
        "le film était bien mieux que prévu",
        "dis-moi quand tu es libre cette semaine",
        "on devrait prendre un café un de ces jours",
        "mon téléphone est mort, désolé pour le retard",
        "joyeux anniversaire, passe une belle journée",
        "il y a trop de bouchons, j'arrive avec dix minutes de retard",
        "tu as pensé à acheter du lait",
        "les enfants ont adoré la plage aujourd'hui",
        "merci pour le dîner d'hier soir",
    ),
    "de": (
        "kommst du heute abend zur party",
        "bin gerade nach hause gekommen, total müde",
        "kannst du mir die fotos später schicken",
        "der film war viel besser als ich dachte",
        "sag mir wann du diese woche zeit hast",
        "wir sollten mal wieder einen kaffee trinken",
        "mein handy war leer, sorry für die späte antwort",
        "alles gute zum geburtstag, hab einen schönen tag",
        "der verkehr ist furchtbar, ich komme zehn minuten später",
        "hast du daran gedacht milch zu kaufen",
        "die kinder fanden den strand heute toll",
        "danke für das essen gestern abend",
    ),
    "it": (
        "vieni alla festa stasera",
        "sono appena tornato a casa, sono stanchissimo",
        "mi mandi le foto più tardi",
        "il film era molto meglio di quanto pensassi",
        "fammi sapere quando sei libero questa settimana",
        "dovremmo prenderci un caffè qualche volta",
        "mi si è scaricato il telefono, scusa il ritardo",
        "buon compleanno, passa una bella giornata",
        "c'è un traffico terribile, arrivo con dieci minuti di ritardo",
        "ti sei ricordato di comprare il latte",
        "ai bambini è piaciuta tanto la spiaggia oggi",
        "grazie per la cena di ieri sera",
    ),
}
