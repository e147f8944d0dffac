# ruff: noqa: RUF001  (Bengali and Persian digits and letters are meant, not look-alikes)
"""Red flags read in Bengali and Persian as in English: real-looking sentences raise them, and
sentences that only look alike (February is not "urgent", "no budget problem" is not "no
budget") do not. Text is normalised first (NFC, Arabic letter forms, ZWNJ, native digits)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.leads.domain import Intake, intake_red_flags
from services.leads.domain.red_flags import normalise, rush_evidence

BRIEF = "Redesign of our clinic's website with online booking"


def flags(*, brief: str = BRIEF, timeline: str | None = "next quarter", needs: tuple[str, ...] = ()) -> dict[str, str]:
    """The red flags of an otherwise good intake (a budget, a brief), with their evidence."""
    found = intake_red_flags(Intake(budget=Decimal("5000"), brief=brief, timeline=timeline, needs=needs))
    return {f.name: f.evidence for f in found}


# --------------------------------------------------------------------------- normalising


def test_normalise_letters_zwnj_digits_and_nfc() -> None:
    assert normalise("فوري") == "فوری"  # Arabic yeh typed on an Arabic keyboard
    assert normalise("كمترين قيمت") == "کمترین قیمت"  # Arabic kaf and yeh
    assert normalise("می\u200cخواهیم") == "می خواهیم"  # zero-width non-joiner
    assert normalise("فوراً") == "فورا"  # the tanwin is rarely written
    assert normalise("ظرف ۳ روز") == "ظرف 3 روز"
    assert normalise("৪৮ ঘণ্টার মধ্যে") == "48 ঘণ্টার মধ্যে"
    assert normalise("٧ أيام") == "7 أیام"  # Arabic-Indic digits too
    assert normalise("\u09df") == normalise("\u09af\u09bc")  # য় precomposed or not
    assert normalise("জরু\u200cরি") == "জরুরি"  # a stray ZWNJ inside a Bengali word is dropped
    assert normalise("  as   soon\u200e as possible ") == "as soon as possible"


# --------------------------------------------------------------------------- must be done fast


@pytest.mark.parametrize(
    "timeline",
    [
        "যত তাড়াতাড়ি সম্ভব",
        "খুব জরুরি, আগামীকালের মধ্যে চাই",
        "এই সপ্তাহের মধ্যেই শেষ করতে হবে",
        "৩ দিনের মধ্যে সাইট লাইভ করতে হবে",
        "৪৮ ঘণ্টার মধ্যে",
        "গতকালই দরকার ছিল",
        "هر چه زودتر",
        "فوری، تا فردا لازم داریم",
        "همین هفته باید تمام شود",
        "ظرف ۳ روز",
        "در اسرع وقت",
        "خیلی عجله داریم",
        "فوري",  # Arabic yeh
        "within 2 days",
    ],
)
def test_a_rush_in_the_timeline(timeline: str) -> None:
    assert flags(timeline=timeline)["must_be_fast"] == f"timeline: {timeline!r}"


@pytest.mark.parametrize(
    "brief",
    [
        "আমাদের একটি ল্যান্ডিং পেজ জরুরি ভিত্তিতে দরকার",
        "নতুন পণ্যের জন্য বিজ্ঞাপন যত দ্রুত সম্ভব চালু করতে চাই",
        "کمپین تبلیغاتی را فوراً لازم داریم",
        "وب‌سایت فروشگاه را هرچه سریع‌تر راه بیندازید",
        "ما فروشگاه اینترنتی را ظرف ۲ روز می‌خواهیم",
    ],
)
def test_a_rush_in_the_brief(brief: str) -> None:
    assert "must_be_fast" in flags(brief=brief)


@pytest.mark.parametrize(
    ("brief", "timeline"),
    [
        (BRIEF, "কোনো তাড়া নেই, আগামী তিন মাসের মধ্যে হলেই চলবে"),
        (BRIEF, "৩০ দিনের মধ্যে"),
        (BRIEF, "ফেব্রুয়ারির শেষে"),
        (BRIEF, "فوریه سال آینده"),  # February, not فوری (urgent)
        (BRIEF, "عجله‌ای نداریم، سه ماه آینده"),
        (BRIEF, "ظرف ۳۰ روز"),
        ("এই সপ্তাহে আমরা নতুন শাখা খুলেছি, এখন অনলাইনে বিক্রি বাড়াতে চাই", "আগামী ত্রৈমাসিকে"),
        ("این هفته یک شعبهٔ جدید باز کردیم و می‌خواهیم فروش آنلاین را بیشتر کنیم", "سه ماه آینده"),
    ],
)
def test_no_rush(brief: str, timeline: str) -> None:
    assert "must_be_fast" not in flags(brief=brief, timeline=timeline)


def test_rush_evidence_reads_native_digits() -> None:
    assert rush_evidence("৫ দিনের মধ্যে", timeline=True) == "5 দিনের মধ্যে"
    assert rush_evidence("تا ۷ روز دیگر", timeline=False) == "تا 7 روز"
    assert rush_evidence("تا ۸ روز دیگر", timeline=False) is None
    assert rush_evidence(None, timeline=True) is None


# --------------------------------------------------------------------------- no budget


@pytest.mark.parametrize(
    ("brief", "said"),
    [
        ("আমাদের কোনো বাজেট নেই, তবে ভালো একটা ওয়েবসাইট চাই", "কোনো বাজেট নেই"),
        ("বাজেট এখনো ঠিক করিনি, আগে দাম জানতে চাই", "বাজেট এখনো ঠিক করিনি"),
        ("হাতে টাকা নেই, আপনাদের সবচেয়ে সস্তা প্যাকেজটা দিন", "হাতে টাকা নেই"),
        ("যত কম খরচে সম্ভব করে দিন", "যত কম খরচে সম্ভব"),
        ("برای این کار بودجه‌ای نداریم", "بودجه ای نداریم"),
        ("پولی برای این کار نداریم ولی سایت لازم داریم", "پولی برای این کار نداریم"),
        ("ارزان‌ترین بسته را می‌خواهیم", "ارزان ترین"),
        ("لطفاً كمترين قيمت را بدهید", "کمترین قیمت"),  # Arabic kaf and yeh
        ("بودجه مشخصی هنوز تعیین نکرده‌ایم", "بودجه مشخصی هنوز تعیین نکرده"),
        ("We have no money for this, so the cheapest option please", "have no money"),
    ],
)
def test_no_budget_in_words(brief: str, said: str) -> None:
    assert flags(brief=brief)["no_defined_budget"] == f"said {said!r}"


@pytest.mark.parametrize(
    "brief",
    [
        "আমাদের বাজেট ৫ লাখ টাকা",
        "বাজেটের কোনো সমস্যা নেই, মানসম্মত কাজ চাই",
        "সস্তা কাজ চাই না, ভালো কাজ চাই",
        "بودجهٔ کافی داریم",
        "مشکل بودجه نداریم؛ کیفیت برایمان مهم است",
        "ارزان بودن برایمان مهم نیست",
        "Budget is agreed with our CFO",
    ],
)
def test_a_budget_is_not_flagged(brief: str) -> None:
    assert "no_defined_budget" not in flags(brief=brief)


def test_a_missing_budget_keeps_its_own_evidence() -> None:
    found = intake_red_flags(Intake(budget=None, brief="আমাদের কোনো বাজেট নেই"))
    assert [f.evidence for f in found if f.name == "no_defined_budget"] == ["no budget was stated"]


# --------------------------------------------------------------------------- no research, "make it like X"


@pytest.mark.parametrize(
    "brief",
    [
        "আমাদের টার্গেট অডিয়েন্স কারা তা ঠিক জানি না",
        "কোনো মার্কেট রিসার্চ করা হয়নি",
        "আমাদের কী দরকার ঠিক জানি না",
        "আপনারা যা ভালো মনে করেন তাই করুন",
        "مخاطبان‌مان را درست نمی‌شناسیم",
        "هیچ تحقیق بازاری انجام نداده‌ایم",
        "نمی‌دانیم دقیقاً چه می‌خواهیم",
        "هر چه خودتان صلاح می‌دانید انجام دهید",
        "We don't know our audience yet",
    ],
)
def test_no_research(brief: str) -> None:
    assert flags(brief=brief)["no_research"].startswith("said ")


@pytest.mark.parametrize(
    "brief",
    [
        "দারাজের ওয়েবসাইটের মতো একটা সাইট বানিয়ে দিন",
        "ওদের লোগোটা হুবহু কপি করে দিন",
        "অমুক কোম্পানির অ্যাপের মতো একটা অ্যাপ চাই",
        "سایتی مثل سایت دیجی‌کالا می‌خواهیم",
        "طراحی را از روی سایت رقیب کپی کنید",
        "دقیقاً شبیه اپ اسنپ باشد",
        "Make it like Apple's site",
        "Just copy Nike's website",
    ],
)
def test_make_it_like_x(brief: str) -> None:
    assert flags(brief=brief)["no_research"].startswith("wants a copy of somebody else's work")


@pytest.mark.parametrize(
    "brief",
    [
        "আমরা বাজার গবেষণা করেছি এবং আমাদের গ্রাহকদের ভালোভাবে জানি",
        "আমাদের নিজস্ব পরিচয় ফুটিয়ে তোলে এমন একটি নতুন ডিজাইন চাই",
        "تحقیق بازار را انجام داده‌ایم و مخاطبانمان را خوب می‌شناسیم",
        "یک سایت منحصربه‌فرد می‌خواهیم که شبیه هیچ‌کس نباشد",
        "مثل همیشه گزارش ماهانه بفرستید",
        "We need fresh website copy for our launch",
        "Make it look like our brand guide",
    ],
)
def test_research_done_is_not_flagged(brief: str) -> None:
    assert "no_research" not in flags(brief=brief)


def test_a_good_intake_in_bengali_and_persian_raises_nothing() -> None:
    assert (
        flags(
            brief="আমাদের বেকারির জন্য অনলাইন অর্ডারসহ একটি ওয়েবসাইট চাই। আমাদের ক্রেতারা মূলত ঢাকার তরুণ পরিবার।",
            timeline="আগামী তিন মাসের মধ্যে",
            needs=("ওয়েবসাইট", "এসইও"),
        )
        == {}
    )
    assert (
        flags(
            brief="برای کلینیک دندانپزشکی‌مان سایتی با نوبت‌دهی آنلاین می‌خواهیم؛ مخاطبان ما خانواده‌های تهران هستند.",
            timeline="تا پایان فصل بعد",
            needs=("سئو",),
        )
        == {}
    )
