"""Names, street addresses and dates of birth: context rules plus a name gazetteer.

No model: these run in microseconds on the edge CPU and are measured on public data
(`benchmarks/pii_public.py`). What they look for:

- PERSON: capitalised words after a title (`Dr.`, `Mrs`), after a cue (`my name is`,
  `Dear`, `signed`, `called`), or starting with a known first name (gazetteer of ~20k first
  and ~18k last names from Faker's locale data, MIT licence, `data/*.txt.gz`).
- ADDRESS: a house number with a street word (`217 Lovers Lane`, `Vesterskovvej 79`,
  `rue de la Paix`, `ul. Cicha 86`), apartment/suite/unit numbers, PO boxes and military
  addresses, extended over the following city/region/postcode lines.
- DATE_OF_BIRTH: a full date (numeric, ISO or with a month name) after a birth cue, or any
  full date whose year is at least 16 years back (transaction dates stay readable).
"""

from __future__ import annotations

import datetime
import gzip
import re
from functools import lru_cache
from importlib import resources

from aivos.shared.residency.spans import Recognizer, Span

__all__ = ["PersonRecognizer", "AddressRecognizer", "DateOfBirthRecognizer", "context_recognizers"]

_UP = r"A-ZÀ-ÖØ-ÞĀ-Ž"  # upper-case letters of Latin scripts (a superset; checked with isupper)
_CAP = rf"[{_UP}][^\W\d_]*(?:['’-][^\W\d_]+)*"  # a capitalised word
_INITIAL = rf"[{_UP}]\."
_NAME_SEQ = rf"(?:{_CAP}|{_INITIAL})(?:[ ](?:{_CAP}|{_INITIAL}|[{_UP}](?![\w]))){{0,3}}"

# Capitalised words that are names in the gazetteer but mostly ordinary words here.
_STOP = frozenset(
    [
        "A",
        "An",
        "The",
        "I",
        "We",
        "You",
        "He",
        "She",
        "It",
        "They",
        "My",
        "Your",
        "Our",
        "His",
        "Her",
        "Their",
        "This",
        "That",
        "These",
        "Those",
        "What",
        "Which",
        "Who",
        "Whom",
        "How",
        "Why",
        "When",
        "Where",
        "Is",
        "Are",
        "Was",
        "Were",
        "Be",
        "Been",
        "Do",
        "Does",
        "Did",
        "Can",
        "Could",
        "Will",
        "Would",
        "Shall",
        "Should",
        "May",
        "Might",
        "Must",
        "Have",
        "Has",
        "Had",
        "Not",
        "No",
        "Yes",
        "Please",
        "Thanks",
        "Thank",
        "Hi",
        "Hello",
        "Dear",
        "Hey",
        "Ok",
        "Okay",
        "And",
        "Or",
        "But",
        "If",
        "Then",
        "So",
        "As",
        "At",
        "By",
        "For",
        "From",
        "In",
        "Into",
        "Of",
        "On",
        "To",
        "With",
        "Without",
        "About",
        "After",
        "Before",
        "Card",
        "Bank",
        "Account",
        "Credit",
        "Debit",
        "Visa",
        "Master",
        "Mastercard",
        "Amex",
        "Pay",
        "Payment",
        "Money",
        "Cash",
        "Loan",
        "Street",
        "Road",
        "Lane",
        "Avenue",
        "Drive",
        "Court",
        "Way",
        "Place",
        "Park",
        "Hill",
        "Square",
        "Apt",
        "Suite",
        "Unit",
        "Floor",
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
        "January",
        "February",
        "March",
        "April",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
        "Mr",
        "Mrs",
        "Ms",
        "Miss",
        "Dr",
        "Prof",
        "Sir",
        "Madam",
        "North",
        "South",
        "East",
        "West",
        "New",
        "Old",
        "Great",
        "Little",
        "Big",
        "Long",
        "Young",
        "Grand",
        "Saint",
        "San",
        "Santa",
        "St",
        "Chase",
        "Price",
        "Rich",
        "Love",
        "Hope",
        "Joy",
        "Grace",
        "Faith",
        "Mark",
        "Bill",
        "Will",
        "Jack",
        "Sunny",
        "Summer",
        "Winter",
        "Rose",
        "Ruby",
        "Pearl",
        "Jade",
        "Amber",
        "Crystal",
        "Honey",
        "Candy",
        "Star",
        "Angel",
        "Happy",
        "Guy",
        "Don",
        "Art",
        "Van",
        "Le",
        "La",
        "Da",
        "De",
        "Del",
        "Di",
        "Du",
        "Des",
        "Von",
        "Der",
        "Den",
        "Al",
        "El",
        "Bin",
        "Ben",
        "Via",
        "Du",
        "Co",
        "Inc",
        "Ltd",
        "Llc",
        "Group",
        "Company",
        "Corp",
        "Team",
        "Support",
        "English",
        "French",
        "German",
        "Spanish",
        "Italian",
        "Dutch",
        "Polish",
        "Swedish",
        "Danish",
        "Finnish",
        "British",
        "American",
        "Canada",
        "France",
        "Germany",
        "Spain",
        "Italy",
        "Paris",
        "London",
        "Berlin",
        "Rome",
        "Madrid",
        "Europe",
        "America",
        "Asia",
        "Black",
        "White",
        "Green",
        "Brown",
        "Gray",
        "Grey",
        "Red",
        "Blue",
        "Gold",
        "Silver",
        "Stone",
        "King",
        "Queen",
        "Prince",
        "Duke",
        "Lord",
        "Baker",
        "Smith",
        "Cook",
        "Hunter",
        "Fisher",
        "Taylor",
        "Walker",
        "Turner",
        "Carter",
        "Parker",
        "Cooper",
        "Miller",
        "Mason",
        "Christian",
        "Muslim",
        "Jewish",
        "Catholic",
        "God",
        "Lord",
        "Jesus",
        "Christmas",
        "Easter",
        "Internet",
        "Email",
        "Phone",
        "Online",
        "Mobile",
        "App",
        "Web",
        "Google",
        "Apple",
        "Microsoft",
        "Amazon",
        "Uber",
        "Tesla",
        "Windows",
        "Android",
    ]
)
_STOP_LOWER = frozenset(w.lower() for w in _STOP)


@lru_cache(maxsize=1)
def _gazetteer() -> tuple[frozenset[str], frozenset[str]]:
    def load(name: str) -> frozenset[str]:
        ref = resources.files("aivos.shared.residency").joinpath("data", name)
        return frozenset(gzip.decompress(ref.read_bytes()).decode("utf-8").split())

    first = load("first_names.txt.gz") - _STOP
    last = load("last_names.txt.gz") - _STOP
    return first, last


_TITLE = re.compile(
    rf"\b(?:Mr|Mrs|Ms|Mx|Miss|Dr|Prof|Sir|Madam|Mme|Mlle|Herr|Frau|Sr|Sra|Srta|Dott|Ing)\.?"
    rf"[ ]+({_NAME_SEQ})"
)
_CUE = re.compile(
    r"(?i:\b(?:my name is|name is|name:|names? are|i am|i'm|this is|called|named|signed|"
    r"regards,?|sincerely,?|cheers,?|dear|hi|hello|thanks,?|by:|from:|to:|contact|"
    r"last name\??|first name\??|surname\??|full name\??|customer|patient|client|"
    r"account holder|cardholder|holder|spouse|husband|wife|son|daughter|mother|father|"
    r"brother|sister|friend|colleague|manager|doctor|nurse)\b)"
    rf"[ :,]*[\n>]*[ ]*({_NAME_SEQ})"
)
_STRONG_CUE = re.compile(
    r"(?i)\b(?:my name is|name is|last name\??|first name\??|surname\??|full name\??)[ :]*"
    r"([^\W\d_][\w'’-]*(?:[ ][^\W\d_][\w'’-]*)?)"
)
_WORD = re.compile(rf"[{_UP}][^\W\d_]*(?:['’-][^\W\d_]+)*")


class PersonRecognizer:
    entity = "PERSON"

    def find(self, text: str) -> list[Span]:
        spans: list[Span] = []
        for m in _TITLE.finditer(text):
            spans.append(self._trim(text, m.start(1), m.end(1)))
        for m in _CUE.finditer(text):
            s = self._trim(text, m.start(1), m.end(1), cue=True)
            if s.end > s.start:
                spans.append(s)
        for m in _STRONG_CUE.finditer(text):
            start, end = m.start(1), m.end(1)
            words = m.group(1).split(" ")
            if len(words) == 2 and words[1].lower() in _STOP_LOWER | {"but", "and"}:
                end = start + len(words[0])
            if text[start:end].lower() not in _STOP_LOWER:
                spans.append(Span(start, end, self.entity))
        spans.extend(self._gazetteer_spans(text))
        return [s for s in spans if s.end > s.start]

    def _trim(self, text: str, start: int, end: int, cue: bool = False) -> Span:
        """Drop stop words at the edges of a capitalised sequence (and a trailing 's)."""
        words = [(m.start() + start, m.end() + start) for m in re.finditer(r"\S+", text[start:end])]
        while words and text[words[-1][0] : words[-1][1]].rstrip(".") in _STOP:
            words.pop()
        while words and text[words[0][0] : words[0][1]].rstrip(".") in _STOP:
            words.pop(0)
        if not words:
            return Span(start, start, self.entity)
        s, e = words[0][0], words[-1][1]
        if text[s:e].endswith(("'s", "’s")):
            e -= 2
        return Span(s, e, self.entity)

    def _gazetteer_spans(self, text: str) -> list[Span]:
        first, last = _gazetteer()
        spans: list[Span] = []
        words = list(_WORD.finditer(text))
        i, n = 0, len(words)
        while i < n:
            w = words[i]
            token = w.group(0)
            base = token[:-2] if token.endswith(("'s", "’s")) else token
            if base in first or (base in last and not _sentence_start(text, w.start())):
                start, end, j = w.start(), w.start() + len(base), i + 1
                # extend over following capitalised words / initials separated by one space
                while (
                    j < n
                    and words[j].start() - end <= 3
                    and text[end : words[j].start()] in (" ", ". ", " ", "-")
                ):
                    nxt = words[j].group(0).rstrip("'s").rstrip("’s")
                    if nxt in _STOP or (len(nxt) > 1 and not nxt[0].isupper()):
                        break
                    end = words[j].start() + len(nxt)
                    j += 1
                spans.append(Span(start, end, self.entity))
                i = j
            else:
                i += 1
        return spans


def _sentence_start(text: str, pos: int) -> bool:
    before = text[max(0, pos - 3) : pos].rstrip(" \"'“(")
    return not before or before[-1] in ".!?\n:>"


# --- addresses --------------------------------------------------------------------------

_SUFFIX_EN = (
    r"Street|St|Road|Rd|Avenue|Ave|Lane|Ln|Drive|Dr|Boulevard|Blvd|Court|Ct|Way|Place|Pl|"
    r"Square|Sq|Terrace|Trail|Trl|Loop|Hills?|Greens?|Parkway|Pkwy|Highway|Hwy|Circle|Cir|"
    r"Crescent|Close|Row|Walk|Gardens?|Grove|Heights|Manor|Mews|Point|Ridge|View|Vista|"
    r"Crossing|Path|Pike|Plaza|Ports?|Springs?|Station|Summit|Turnpike|Valley|Village|Wells?|"
    r"Alley|Bypass|Causeway|Cove|Creek|Estates?|Expressway|Falls|Fields?|Forest|Gateway|Glen|"
    r"Harbor|Haven|Island|Junction|Lakes?|Landing|Meadows?|Mills?|Mount|Orchard|Oval|Pass|"
    r"Pines|Plains?|Ranch|Rapids|Rest|Route|Run|Shores?|Stream|Track|Trace|Tunnel|Underpass|"
    r"Union|Viaduct|Ville|Wharf|Motorway|Green|Broadway|Esplanade|Parade|Quay"
)
# street-name endings of continental Europe: "Vesterskovvej 79", "Kopfhölzistrasse 45"
_SUFFIX_EU = tuple(
    [
        "straße",
        "strasse",
        "str.",
        "weg",
        "gasse",
        "platz",
        "allee",
        "ring",
        "damm",
        "ufer",
        "vej",
        "gade",
        "gatan",
        "gata",
        "vägen",
        "väg",
        "laan",
        "straat",
        "plein",
        "gracht",
        "dijk",
        "katu",
        "tie",
        "kuja",
        "polku",
        "utca",
        "út",
        "tér",
        "ulica",
        "cesta",
        "ulice",
        "náměstí",
        "tee",
        "iela",
        "gatve",
        "vegur",
        "vegen",
        "veien",
    ]
)
_PREFIX_EU = (
    r"rue|avenue|boulevard|bd|chemin|allée|impasse|place|quai|via|viale|piazza|corso|largo|"
    r"calle|avenida|av\.|paseo|plaza|carrer|rua|travessa|praça|ul\.|ulica|al\.|aleja|"
    r"straße|strada|calea|bulevardul|odos|ulitsa"
)
_NUM = r"\d{1,5}[A-Za-z]?(?:[-/]\d{1,4})?"
_WORDS = rf"(?:{_CAP}\.?[ ]){{0,4}}"
_STREET = (
    rf"(?:{_NUM}[ ]+)?(?:{_NUM}[ ]+{_WORDS}{_CAP}?(?:{_SUFFIX_EN})\b\.?"  # 217 Lovers Lane
    rf"|(?:{_NUM}[ ,]+)?(?i:{_PREFIX_EU})[ ]+(?:(?:de|du|des|la|le|del|della|di|da|do|dos|das"
    rf"|van|von)[ ]+)*{_WORDS}{_CAP}(?:[ ,]+{_NUM})?"  # rue de la Paix, ul. Cicha 86
    rf"|{_NUM}[ ]+(?:{_CAP}[ ]){{1,3}}{_NUM}\b"  # 6750 Koskikatu 25, 5850 Jana Nerudy 894
    rf"|(?:P\.?O\.?|Post Office)[ ]?Box[ ]+\d{{1,6}}"
    rf"|(?:USNS|USNV|USS|USCGC)[ ]+{_CAP}(?:[ ,\n]+(?:FPO|APO|DPO)[ ]+[A-Z]{{2}}[ ]+\d{{5}})?"
    rf"|(?:Unit|PSC)[ ]+\d{{4}},?[ ]+Box[ ]+\d{{4}}(?:[ ,\n]+(?:FPO|APO|DPO)[ ]+[A-Z]{{2}}[ ]+\d{{5}})?"
    rf")"
)
_UNIT = r"(?i:\b(?:apt|apartment|suite|ste|unit|flat|room|floor|fl)\b\.?[ ]?#?[ ]?\d{1,5}[A-Za-z]?)"
# city / region / postcode / country lines or comma parts that follow a street
_TAIL = (
    rf"(?:(?:[ ]*,[ ]*|[ ]*\n[ >]*|[ ]+)(?:{_UNIT}|\d{{4,6}}(?:-\d{{4}})?|[A-Z]{{2}}[ ]\d{{5}}"
    rf"|[{_UP}]{{2,3}}\b|[{_UP}][\w'.()-]*(?:[ ][{_UP}(][\w'.()-]*){{0,3}}(?:[ ]\d{{4,6}})?))"
)
_ADDRESS = re.compile(rf"(?<![\w-])(?:{_STREET}(?:[ ,]+{_UNIT})?|{_UNIT})(?:{_TAIL}){{0,5}}")
_EU_STREET = re.compile(
    rf"(?<![\w-])(?:{_NUM}[ ]+)?(?:{_CAP}[ ])?([^\W\d_][\w'.-]*)[ ]+{_NUM}(?![\w])"
)
_TAIL_RE = re.compile(rf"(?:[ ,]+{_UNIT})?(?:{_TAIL}){{0,5}}")
_ADDRESS_CUE = re.compile(
    r"(?i)\b(?:address|live at|lives at|living at|located at|moved to|move to|deliver(?:ed)? to|"
    r"ship(?:ped)? to|send (?:it |them )?to|zip|postcode|post code|postal code)\b[ :]*(?:is[ ]+)?"
    r"(?:[\w' -]{0,30}?)(\d{1,5}(?:[ ]+[\w'.-]+){0,5})"
)


class AddressRecognizer:
    entity = "ADDRESS"

    def find(self, text: str) -> list[Span]:
        spans = [Span(m.start(), _rstrip(text, m.start(), m.end()), self.entity)
                 for m in _ADDRESS.finditer(text)]  # fmt: skip
        for m in _EU_STREET.finditer(text):
            if m.group(1).lower().endswith(_SUFFIX_EU):
                tail = _TAIL_RE.match(text, m.end())
                end = tail.end() if tail else m.end()
                spans.append(Span(m.start(), _rstrip(text, m.start(), end), self.entity))
        for m in _ADDRESS_CUE.finditer(text):
            spans.append(Span(m.start(1), _rstrip(text, m.start(1), m.end(1)), self.entity))
        return [s for s in spans if s.end - s.start >= 3]


def _rstrip(text: str, start: int, end: int) -> int:
    while end > start and text[end - 1] in " ,.\n?!>":
        end -= 1
    return end


# --- dates of birth ---------------------------------------------------------------------

_MONTHS = (
    r"Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|"
    r"Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?"
)
_DATE = re.compile(
    r"(?<![\w/.-])(?:"
    r"(?P<y1>(?:19|20)\d{2})-(?:0?[1-9]|1[0-2])-(?:0?[1-9]|[12]\d|3[01])(?:[ T]\d{1,2}:\d{2}(?::\d{2})?)?"
    r"|(?:0?[1-9]|[12]\d|3[01])[./-](?:0?[1-9]|[12]\d|3[01])[./-](?P<y2>(?:19|20)?\d{2})"
    rf"|(?i:(?:{_MONTHS})\.?)[ ](?:0?[1-9]|[12]\d|3[01])(?:st|nd|rd|th)?,?[ ](?P<y3>(?:19|20)\d{{2}})"
    rf"|(?:0?[1-9]|[12]\d|3[01])(?:st|nd|rd|th)?\.?[ ](?:of[ ])?(?i:(?:{_MONTHS})\.?),?[ ](?P<y4>(?:19|20)\d{{2}})"
    r")(?![\w/-]|\.\d)"
)
_BIRTH = re.compile(
    r"(?i)\b(?:born|birth|birthday|dob|d\.o\.b|b\.|geboren|né|née|nacido|nata|nato)\b"
)


class DateOfBirthRecognizer:
    entity = "DATE_OF_BIRTH"

    def __init__(self, min_age_years: int = 16) -> None:
        self.cutoff = datetime.date.today().year - min_age_years

    def find(self, text: str) -> list[Span]:
        spans = []
        for m in _DATE.finditer(text):
            y = m.group("y1") or m.group("y2") or m.group("y3") or m.group("y4") or ""
            year = int(y) + (1900 if len(y) == 2 and int(y) > 30 else 2000 if len(y) == 2 else 0)
            cue = _BIRTH.search(text, max(0, m.start() - 40), m.start()) is not None
            if cue or year <= self.cutoff:
                spans.append(Span(m.start(), m.end(), self.entity))
        return spans


def context_recognizers() -> list[Recognizer]:
    """Names, addresses and dates of birth, after the structured recognizers."""
    return [DateOfBirthRecognizer(), AddressRecognizer(), PersonRecognizer()]
