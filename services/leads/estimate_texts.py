"""The words of the estimate acceptance pages, per language (the lead's: English, Bengali,
Persian; Persian is written right to left). Every language has every key; placeholders in
braces are filled by ``text``. The template (templates/estimate.html.j2) escapes all of it."""

from __future__ import annotations

from typing import Any

# Languages written right to left.
RTL = frozenset({"fa"})

TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "page_title": "Estimate",
        "version": "Version {version}",
        "scope": "Scope",
        "description": "Description",
        "hours": "Hours",
        "amount": "Amount",
        "total": "Total",
        "monthly_fee": "Monthly fee",
        "included_hours": "Hours included each month",
        "hourly_rate": "Hourly rate beyond the scope",
        "deposit": "Deposit before work starts",
        "deposit_text": "{percent}% of {base}: {amount}",
        "base_total": "the total",
        "base_month": "the first month's fee",
        "terms_title": "Terms",
        "terms": (
            "Work starts when the deposit has cleared. Requests outside the scope above are paid change "
            "orders, priced before any work on them. This estimate is valid until {date}."
        ),
        "digest": "Fingerprint of this version (SHA-256)",
        "name_label": "Your full name",
        "accept_button": "Accept and sign",
        "accept_note": "By typing your name and pressing the button you accept this estimate.",
        "thanks_title": "Thank you",
        "thanks_text": (
            "{name}, you accepted “{title}” (version {version}). We will send you the deposit invoice; "
            "work starts when it has cleared."
        ),
        "bad_signature_title": "This link is not valid",
        "bad_signature": "We could not verify this link. Please use the latest link we sent you.",
        "already_accepted_title": "Already accepted",
        "already_accepted": "This estimate was already accepted. There is nothing more to do.",
        "closed_title": "This estimate is no longer open",
        "closed": "This estimate can no longer be accepted. Please contact us for a new one.",
        "superseded_title": "There is a newer version",
        "superseded": "This estimate was revised: this version can no longer be accepted. Please use the latest link.",
        "expired_title": "This estimate has expired",
        "expired": "This estimate is past its validity date. Please contact us for a new one.",
        "name_required": "Type your full name to accept the estimate.",
    },
    "bn": {
        "page_title": "মূল্য প্রাক্কলন",
        "version": "সংস্করণ {version}",
        "scope": "কাজের পরিধি",
        "description": "বিবরণ",
        "hours": "ঘণ্টা",
        "amount": "মূল্য",
        "total": "মোট",
        "monthly_fee": "মাসিক ফি",
        "included_hours": "প্রতি মাসে অন্তর্ভুক্ত ঘণ্টা",
        "hourly_rate": "পরিধির বাইরের কাজের ঘণ্টাপ্রতি হার",
        "deposit": "কাজ শুরুর আগে অগ্রিম জমা",
        "deposit_text": "{base}-এর {percent}%: {amount}",
        "base_total": "মোট মূল্য",
        "base_month": "প্রথম মাসের ফি",
        "terms_title": "শর্তাবলি",
        "terms": (
            "অগ্রিম জমার অর্থ আমাদের হিসাবে পৌঁছানোর পরেই কাজ শুরু হবে। উপরের পরিধির বাইরের যেকোনো অনুরোধ "
            "আলাদা মূল্যের পরিবর্তন আদেশ (চেঞ্জ অর্ডার) হিসেবে করা হবে, কাজ শুরুর আগেই তার দাম জানানো হবে। "
            "এই প্রাক্কলন {date} পর্যন্ত বৈধ।"
        ),
        "digest": "এই সংস্করণের আঙুলছাপ (SHA-256)",
        "name_label": "আপনার পুরো নাম",
        "accept_button": "গ্রহণ করুন ও স্বাক্ষর দিন",
        "accept_note": "নাম লিখে বোতাম চাপলে আপনি এই প্রাক্কলন গ্রহণ করছেন।",
        "thanks_title": "ধন্যবাদ",
        "thanks_text": (
            "{name}, আপনি “{title}” (সংস্করণ {version}) গ্রহণ করেছেন। আমরা আপনাকে অগ্রিম জমার চালান পাঠাব; অর্থ পৌঁছালেই কাজ শুরু হবে।"
        ),
        "bad_signature_title": "লিঙ্কটি বৈধ নয়",
        "bad_signature": "এই লিঙ্কটি যাচাই করা যায়নি। অনুগ্রহ করে আমাদের পাঠানো সর্বশেষ লিঙ্কটি ব্যবহার করুন।",
        "already_accepted_title": "ইতিমধ্যে গৃহীত",
        "already_accepted": "এই প্রাক্কলনটি আগেই গ্রহণ করা হয়েছে। আর কিছু করার দরকার নেই।",
        "closed_title": "প্রাক্কলনটি আর খোলা নেই",
        "closed": "এই প্রাক্কলনটি আর গ্রহণ করা যাবে না। নতুন প্রাক্কলনের জন্য আমাদের সঙ্গে যোগাযোগ করুন।",
        "superseded_title": "একটি নতুন সংস্করণ আছে",
        "superseded": ("এই প্রাক্কলনটি সংশোধন করা হয়েছে; এই সংস্করণটি আর গ্রহণ করা যাবে না। অনুগ্রহ করে সর্বশেষ লিঙ্কটি ব্যবহার করুন।"),
        "expired_title": "প্রাক্কলনের মেয়াদ শেষ",
        "expired": "এই প্রাক্কলনের মেয়াদ শেষ হয়ে গেছে। নতুন প্রাক্কলনের জন্য আমাদের সঙ্গে যোগাযোগ করুন।",
        "name_required": "প্রাক্কলনটি গ্রহণ করতে আপনার পুরো নাম লিখুন।",
    },
    "fa": {
        "page_title": "برآورد هزینه",
        "version": "نسخهٔ {version}",
        "scope": "محدودهٔ کار",
        "description": "شرح",
        "hours": "ساعت",
        "amount": "مبلغ",
        "total": "جمع کل",
        "monthly_fee": "هزینهٔ ماهانه",
        "included_hours": "ساعت‌های گنجانده‌شده در هر ماه",
        "hourly_rate": "نرخ ساعتی کار خارج از محدوده",
        "deposit": "پیش‌پرداخت پیش از شروع کار",
        "deposit_text": "{percent}٪ از {base}: {amount}",
        "base_total": "مبلغ کل",
        "base_month": "هزینهٔ ماه نخست",
        "terms_title": "شرایط",
        "terms": (
            "کار پس از وصول پیش‌پرداخت آغاز می‌شود. درخواست‌های خارج از محدودهٔ بالا به‌صورت سفارش تغییر "
            "با هزینهٔ جداگانه انجام می‌شوند و پیش از شروع، قیمتشان اعلام می‌شود. این برآورد تا {date} معتبر است."
        ),
        "digest": "اثر انگشت این نسخه (SHA-256)",
        "name_label": "نام و نام خانوادگی شما",
        "accept_button": "می‌پذیرم و امضا می‌کنم",
        "accept_note": "با نوشتن نام خود و زدن این دکمه، این برآورد را می‌پذیرید.",
        "thanks_title": "سپاس‌گزاریم",
        "thanks_text": (
            "{name}، شما «{title}» (نسخهٔ {version}) را پذیرفتید. صورت‌حساب پیش‌پرداخت را برایتان می‌فرستیم؛ "
            "کار پس از وصول آن آغاز می‌شود."
        ),
        "bad_signature_title": "این پیوند معتبر نیست",
        "bad_signature": "این پیوند تأیید نشد. لطفاً از آخرین پیوندی که برایتان فرستاده‌ایم استفاده کنید.",
        "already_accepted_title": "پیش‌تر پذیرفته شده است",
        "already_accepted": "این برآورد پیش‌تر پذیرفته شده است و کار دیگری لازم نیست.",
        "closed_title": "این برآورد دیگر باز نیست",
        "closed": "این برآورد دیگر قابل پذیرش نیست. برای برآورد تازه با ما تماس بگیرید.",
        "superseded_title": "نسخهٔ تازه‌تری وجود دارد",
        "superseded": "این برآورد بازنگری شده و این نسخه دیگر قابل پذیرش نیست. لطفاً از آخرین پیوند استفاده کنید.",
        "expired_title": "اعتبار این برآورد تمام شده است",
        "expired": "تاریخ اعتبار این برآورد گذشته است. برای برآورد تازه با ما تماس بگیرید.",
        "name_required": "برای پذیرش برآورد، نام کامل خود را بنویسید.",
    },
}


def text(language: str, key: str, **values: Any) -> str:
    """The text ``key`` in ``language`` (English when the language has none), filled in."""
    words = TEXTS.get(language, TEXTS["en"])[key]
    return words.format(**values) if values else words


def direction(language: str) -> str:
    """``rtl`` for a language written right to left, else ``ltr`` (the page's ``dir``)."""
    return "rtl" if language in RTL else "ltr"
