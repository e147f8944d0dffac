"""Red flags: the signals that a client will be hard work, each raised with its evidence."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.leads.domain.intake import Intake
from shared.i18n import to_ascii_digits

RED_FLAGS = (
    "one_off_project",
    "no_written_brief",
    "no_defined_budget",
    "no_marketing_experience",
    "no_research",
    "must_be_fast",
    "refuses_deposit",
    "changes_mind_often",
    "boss_reverses_direction",
    # A client the agency once let go comes back (domain/returning.py).
    "terminated_before",
)

_RUSH = re.compile(
    r"\b(asap|a\.s\.a\.p|urgent|urgently|yesterday|immediately|right away|rush|this week|tomorrow)\b"
    r"|as soon as possible|as fast as possible|as quickly as possible",
    re.I,
)
_ONE_OFF = re.compile(r"\b(one[- ]?off|one[- ]?time|single project|just once|only once)\b", re.I)
_NO_EXPERIENCE = re.compile(
    r"\b(never (done|did|tried|run|ran) (any )?marketing|no marketing experience|first time (doing |trying )?marketing"
    r"|new to marketing|never marketed|no idea how marketing works)\b",
    re.I,
)
_NO_RESEARCH = re.compile(
    r"\b(not sure what we (need|want)|don'?t know what we (need|want)|no idea what we (need|want)"
    r"|whatever you (think|suggest)|just make it (good|nice|pop)|tell us what we need)\b",
    re.I,
)

# --------------------------------------------------------------------------- Bengali and Persian
# Leads write in English, Bengali and Persian. Text is normalised before it is read (``normalise``:
# NFC, Arabic letter forms as Persian ones, the zero-width non-joiner as a space, Bengali and
# Persian digits as ASCII), and so are the patterns. In a Bengali or Persian pattern a space
# stands for "a space, a zero-width non-joiner or nothing" (``می‌خواهیم``, ``می خواهیم`` and
# ``میخواهیم`` are one word). Bengali vowel signs are not word characters for ``re``, so a
# Bengali phrase only needs no Bengali letter before it (case endings follow it); Persian words
# have ``\b`` on both sides (``فوری``, urgent, is not ``فوریه``, February).

_LETTERS = str.maketrans(
    {
        "\u064a": "\u06cc",  # Arabic yeh ي -> Persian yeh ی
        "\u0649": "\u06cc",  # alef maksura ى -> ی
        "\u0643": "\u06a9",  # Arabic kaf ك -> Persian keheh ک
        "\u0640": None,  # tatweel (kashida), a stretch of the line
        "\u200d": None,  # zero-width joiner
        "\u200e": None,  # left-to-right mark
        "\u200f": None,  # right-to-left mark
        "\ufeff": None,  # zero-width no-break space
        "\u00ad": None,  # soft hyphen
    }
)
_HARAKAT = re.compile("[\u064b-\u065f\u0670]")  # short vowels and hamza marks, rarely written
_BENGALI_ZWNJ = re.compile("(?<=[\u0980-\u09ff])\u200c|\u200c(?=[\u0980-\u09ff])")
_SPACES = re.compile(r"[^\S\n]+")


def normalise(text: str) -> str:
    """Text as the red-flag patterns read it: Unicode NFC; Arabic ي ى ك as Persian ی ک, no
    tatweel or short vowels; the zero-width non-joiner as a space (in Bengali it is dropped);
    Bengali, Persian and Arabic-Indic digits as ASCII; runs of spaces as one."""
    text = unicodedata.normalize("NFC", text).translate(_LETTERS)
    text = _HARAKAT.sub("", _BENGALI_ZWNJ.sub("", text)).replace("\u200c", " ")
    return _SPACES.sub(" ", to_ascii_digits(text)).strip()


def _pattern(english: tuple[str, ...], bengali: tuple[str, ...], persian: tuple[str, ...]) -> re.Pattern[str]:
    def local(phrase: str) -> str:
        return normalise(phrase).replace(" ", r"\s*")

    parts = [rf"\b(?:{'|'.join(english)})\b"] if english else []
    if bengali:
        parts.append(rf"(?<![\u0980-\u09ff])(?:{'|'.join(local(p) for p in bengali)})")
    if persian:
        parts.append(rf"\b(?:{'|'.join(local(p) for p in persian)})\b")
    return re.compile("|".join(parts), re.I)


# Within one clause: no sentence end between the words of a phrase.
_CLAUSE = r"[^.!?\n।؟,،;]{0,30}?"
_NONE = "(?:নেই|নাই)"

# Urgency anywhere in a brief (a timeline reads the wider _RUSH_ANY).
_RUSH_STRONG = _pattern(
    (r"asap", r"a\.s\.a\.p", r"urgent(ly)?", r"immediately", r"as (soon|fast|quickly) as possible", r"by tomorrow"),
    (
        "যত তাড়াতাড়ি সম্ভব",
        "যত দ্রুত সম্ভব",
        "যত শীঘ্র সম্ভব",
        "যথাসম্ভব দ্রুত",
        "যথাশীঘ্র",
        "জরুর[িী]",
        "অবিলম্বে",
        "এখনই দরকার",
        "(?:আগামী)?কাল(?:কে)?র মধ্যে",
        "আজকের মধ্যে",
        "খুব তাড়া আছে",
        "তাড়া আছে",
    ),
    (
        "هر چه (?:زودتر|سریع تر|سریعتر)",
        "هرچه (?:زودتر|سریع تر|سریعتر)",
        "در اسرع وقت",
        "فوری",
        "فوریت",
        "فورا",
        "خیلی عجله داریم",
        "عجله داریم",
        "تا فردا",
        "تا آخر امروز",
        "همین امروز",
        "همین الان",
    ),
)
# Urgency in a timeline: also "this week", "tomorrow", "yesterday".
_RUSH_ANY = _pattern(
    (r"yesterday", r"right away", r"rush", r"this week", r"tomorrow"),
    ("এই সপ্তাহে", "এই সপ্তাহের মধ্যে", "চলতি সপ্তাহে", "আগামীকাল", "গতকাল", "এখনই", "আজই"),
    ("این هفته", "همین هفته", "تا آخر هفته", "فردا", "دیروز", "پس فردا"),
)
# "Within 3 days", "৩ দিনের মধ্যে", "ظرف ۳ روز": a week or less is a rush (digits read as ASCII).
_WITHIN = (
    re.compile(r"\b(?:within|in) (\d+) (day|hour)s?\b", re.I),
    re.compile(r"(?<![\u0980-\u09ff\d])(\d+)\s*(দিন|ঘ[ণন]্টা)(?:ের|র|এর)?\s*(?:মধ্যে|ভেতরে|ভিতরে)"),
    re.compile(r"\b(?:ظرف|طی|در\s*عرض|تا)\s*(\d+)\s*(روز|ساعت)\b"),
)
_WEEK_HOURS = 7 * 24


def _within_a_week(text: str) -> str | None:
    for pattern in _WITHIN:
        for m in pattern.finditer(text):
            hours = int(m.group(1)) * (1 if m.group(2).lower() in ("hour", "ঘণ্টা", "ঘন্টা", "ساعت") else 24)
            if 0 < hours <= _WEEK_HOURS:
                return m.group(0)
    return None


def rush_evidence(text: str | None, *, timeline: bool) -> str | None:
    """The words that say a lead wants it fast, or None. A timeline ("this week", "tomorrow")
    says more than a brief, where only the strong words count ("urgent", "as soon as possible",
    "within 3 days"). ``text`` is read normalised."""
    said = normalise(text or "")
    if not said:
        return None
    if m := _RUSH_STRONG.search(said) or (_RUSH_ANY.search(said) if timeline else None):
        return m.group(0)
    return _within_a_week(said)


_NO_BUDGET = _pattern(
    (
        r"no budget",
        r"zero budget",
        r"(don'?t|do not) have (a|any) budget",
        r"no money (for|to spend)",
        r"(have|got) no money",
        r"cheapest",
        r"as cheap(ly)? as possible",
    ),
    (
        "কোনো বাজেট " + _NONE,
        "বাজেট (?:এখনো |এখনও |আপাতত )?" + _NONE,
        "বাজেট (?:এখনো |এখনও )?ঠিক (?:করিনি|হয়নি)",
        "(?:হাতে |কোনো )?টাকা(?:-পয়সা)? " + _NONE,
        "সবচেয়ে সস্তা",
        "সবচেয়ে কম (?:দামে|খরচে|টাকায়)",
        "যত কম (?:খরচে|দামে|টাকায়) সম্ভব",
    ),
    (
        "(?<!مشکل\\s)بودجه" + _CLAUSE + "ندار(?:یم|م)",
        "بودجه (?:مشخصی |معینی )?(?:هنوز )?(?:تعیین|مشخص) نکرده",
        "پول" + _CLAUSE + "ندار(?:یم|م)",
        "ارزان ترین",
        "هر چه ارزان تر",
        "هرچه ارزان تر",
        "کمترین (?:قیمت|هزینه)",
    ),
)

_NO_RESEARCH_MORE = _pattern(
    (
        r"(don'?t|do not) know (who )?our (audience|customers|target)",
        r"no research",
        r"(haven'?t|have not|never) (done|did) (any )?research",
    ),
    (
        "(?:অডিয়েন্স|গ্রাহক|ক্রেতা|দর্শক|কাস্টমার)" + _CLAUSE + "জানি না",
        "(?:কোনো )?(?:রিসার্চ|গবেষণা|মার্কেট রিসার্চ|বাজার যাচাই)" + _CLAUSE + "(?:করিনি|করা হয়নি|হয়নি|নেই)",
        "কী (?:দরকার|লাগবে|চাই) (?:তা )?(?:ঠিক )?জানি না",
        "আপনারা(?:ই)? যা ভালো মনে করেন",
    ),
    (
        "مخاطب" + _CLAUSE + "(?:نمی شناسیم|نمی دانیم)",
        "نمی دانیم" + _CLAUSE + "مخاطب",
        "(?:تحقیق|پژوهش|بررسی|مطالعه)(?: ی| ای)?(?: بازار)?" + _CLAUSE + "(?:نکرده|انجام نداده|نداشته|نداریم)",
        "نمی دانیم" + _CLAUSE + "(?:چه|چی) (?:می خواهیم|لازم داریم|نیاز داریم)",
        "هر چه (?:خودتان|شما) (?:صلاح|مناسب)",
        "هرچه (?:خودتان|شما) (?:صلاح|مناسب)",
    ),
)

# "Make it like X": a lead who wants a copy of somebody else's work has not worked out their
# own audience or message; it is read as ``no_research``, with that evidence.
_COPY = _pattern(
    (
        r"make it (look )?(just |exactly )?like (?!our\b|us\b|we\b)",
        r"(just|exactly) like (the )?\w+'?s? (website|site|app|logo|design|store|shop)",
        r"copy \w+'s (website|site|app|logo|design|look)",
        r"copy (the|their) (website|site|app|logo|design)",
        r"a clone of",
    ),
    (
        "(?:ওয়েবসাইট|সাইট|অ্যাপ|লোগো|পেজ|ডিজাইন)(?:টি|টা)?(?:র|ের|এর)? মতো?",
        "হুবহু (?:কপি|নকল)",
        "কপি করে (?:দিন|দেবেন|দিতে|দেন)",
        "নকল করে",
    ),
    (
        "(?:مثل|شبیه|عین|مشابه) (?:سایت|وب سایت|وبسایت|اپ|اپلیکیشن|لوگو|صفحه|طراحی)",
        "کپی (?:کنید|کن|کردن|بگیرید|برابر|برداری|از)",
        "از روی (?:سایت|طراحی)",
    ),
)


def _said(match: re.Match[str] | None) -> str | None:
    return match.group(0) if match else None


@dataclass(frozen=True)
class RedFlag:
    name: str
    evidence: str


def intake_red_flags(intake: Intake) -> list[RedFlag]:
    """Red flags visible at intake, each with the evidence that raised it."""
    flags: list[RedFlag] = []
    if not (intake.brief and intake.brief.strip()):
        flags.append(RedFlag("no_written_brief", "no written brief was given"))
    if intake.budget is None or intake.budget <= 0:
        flags.append(RedFlag("no_defined_budget", "no budget was stated"))
    if intake.timeline and (_RUSH.search(intake.timeline) or rush_evidence(intake.timeline, timeline=True)):
        flags.append(RedFlag("must_be_fast", f"timeline: {intake.timeline!r}"))
    elif said := rush_evidence("\n".join(filter(None, [intake.brief, *intake.needs])), timeline=False):
        flags.append(RedFlag("must_be_fast", f"said {said!r}"))
    texts = " ".join(filter(None, [intake.brief, intake.timeline, *intake.needs]))
    # Bengali and Persian are read normalised, one field a line (a phrase never spans two).
    said_all = normalise("\n".join(filter(None, [intake.brief, intake.timeline, *intake.needs])))
    if not any(f.name == "no_defined_budget" for f in flags) and (said := _said(_NO_BUDGET.search(said_all))):
        flags.append(RedFlag("no_defined_budget", f"said {said!r}"))
    if m := _ONE_OFF.search(texts):
        flags.append(RedFlag("one_off_project", f"described as {m.group(0)!r}"))
    if m := _NO_EXPERIENCE.search(texts):
        flags.append(RedFlag("no_marketing_experience", f"said {m.group(0)!r}"))
    if m := _NO_RESEARCH.search(texts):
        flags.append(RedFlag("no_research", f"said {m.group(0)!r}"))
    elif said := _said(_NO_RESEARCH_MORE.search(said_all)):
        flags.append(RedFlag("no_research", f"said {said!r}"))
    elif said := _said(_COPY.search(said_all)):
        flags.append(RedFlag("no_research", f"wants a copy of somebody else's work: said {said!r}"))
    return flags


def add_flag(
    flags: list[dict[str, Any]], name: str, evidence: str, *, source: str, at: datetime
) -> list[dict[str, Any]] | None:
    """The flag list with ``name`` raised, or None when it is already raised (evidence is kept)."""
    if name not in RED_FLAGS:
        raise ValueError(f"unknown red flag {name!r}; known: {', '.join(RED_FLAGS)}")
    if any(f["name"] == name for f in flags):
        return None
    return [*flags, {"name": name, "evidence": evidence, "source": source, "at": at.isoformat()}]


def changes_mind_often(change_requests: int, *, after: int) -> bool:
    """A client who asked for ``after`` or more changes on one deal changes their mind often."""
    return change_requests >= after
