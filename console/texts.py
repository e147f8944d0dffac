# ruff: noqa: RUF001  (Bengali and Persian letters are meant, not look-alikes)
"""The console's words in English, Bengali and Persian, and the formatting of numbers, money,
dates and times in the person's language (shared/i18n.py: Babel's CLDR patterns and each
language's own digits).

English text is the key; a word with no translation is shown in English (better than nothing
and easy to spot). Values from the services (stages, statuses, reasons) go through the same
table, so ``_("awareness")`` is a stage's name in the person's language.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from babel import dates as babel_dates

from shared.i18n import LOCALES, format_money, format_number, native_digits

LANGUAGES = ("en", "bn", "fa")
LANGUAGE_NAMES = {"en": "English", "bn": "বাংলা", "fa": "فارسی"}
RTL = frozenset({"fa"})

# (href, label, permission): the menu shows what the person's role may open.
NAV = (
    ("/pipeline", "Pipeline", "reports.read"),
    ("/clients", "Clients", "clients.read"),
    ("/invoices", "Invoices", "invoices.read"),
    ("/review", "Let-go review", "clients.read"),
    ("/economics", "Economics", "reports.read"),
    ("/tasks", "My tasks", "tasks.read"),
    ("/sequences", "Sequences", "sequences.read"),
)

METRIC_LABELS = {
    "cac": "CAC",
    "ltv": "LTV",
    "ltv_cac": "LTV:CAC",
    "payback_months": "Payback (months)",
    "nrr": "NRR",
    "grr": "GRR",
    "revenue_churn": "Revenue churn",
    "roi": "ROI (first-year revenue vs spend)",
    "cost_per_lead": "Cost per lead",
    "cost_per_qualified_lead": "Cost per qualified lead",
    "median_lifetime_months": "Median client lifetime (months)",
}

# What ?done=<key> says after an action went through.
DONE = {
    "qualified": "The lead is qualified.",
    "estimate": "The estimate is made.",
    "won": "The deal is won; billing issues the deposit invoice.",
    "lost": "The deal is marked lost.",
    "change": "The change request is recorded.",
    "takeover": "You took over: automated e-mails are paused.",
    "released": "The takeover ended.",
    "erased": "The person is erased.",
    "paid": "The payment is recorded.",
    "saved": "Saved.",
    "cancelled": "The cancellation is confirmed.",
    "done": "The task is done.",
    "review": "The review ran.",
}

# English names of the services' values (the key is the value itself).
_EN: dict[str, str] = {
    "bank_transfer": "bank transfer",
    "direct_debit": "direct debit",
    "budget_cut": "budget cut",
    "not_using": "not using it",
    "poor_results": "poor results",
    "switching_provider": "switching provider",
    "project_done": "project done",
    "decision_maker": "decision maker",
    "annual_revenue": "annual revenue",
    "paypal": "PayPal",
}

_FIT = {
    "bn": {
        "industry": "শিল্প",
        "employees": "কর্মী সংখ্যা",
        "country": "দেশ",
        "decision_maker": "সিদ্ধান্তগ্রহীতা",
        "pains": "সমস্যা",
        "annual_revenue": "বার্ষিক আয়",
        "Record a payment": "পরিশোধ লিখুন",
    },
    "fa": {
        "industry": "صنعت",
        "employees": "تعداد کارکنان",
        "country": "کشور",
        "decision_maker": "تصمیم‌گیرنده",
        "pains": "مشکلات",
        "annual_revenue": "درآمد سالانه",
        "Record a payment": "ثبت پرداخت",
    },
}

_BN: dict[str, str] = {
    # navigation and layout
    "Pipeline": "পাইপলাইন",
    "Clients": "ক্লায়েন্ট",
    "Invoices": "চালান",
    "Let-go review": "ছেড়ে দেওয়ার পর্যালোচনা",
    "Economics": "অর্থনীতি",
    "My tasks": "আমার কাজ",
    "Sequences": "ক্রম",
    "Pages": "পাতা",
    "Language": "ভাষা",
    "Change": "বদলান",
    "Sign in": "সাইন ইন",
    "Sign out": "সাইন আউট",
    "Skip to content": "মূল অংশে যান",
    "Token": "টোকেন",
    "or": "অথবা",
    "Sign in with your organisation's account": "আপনার প্রতিষ্ঠানের অ্যাকাউন্ট দিয়ে সাইন ইন করুন",
    "Paste your personal token (clientflow users add prints it), or the API key that clientflow run printed.": "আপনার ব্যক্তিগত টোকেন (clientflow users add এটি দেখায়) অথবা clientflow run যে API কী দেখিয়েছে তা বসান।",
    "Not allowed": "অনুমতি নেই",
    "Something is wrong": "কিছু একটা ভুল হয়েছে",
    "Back to the pipeline": "পাইপলাইনে ফিরে যান",
    "The {service} service is not answering: its part of this page is missing; the rest works.": "{service} সার্ভিস সাড়া দিচ্ছে না: এই পাতার সেই অংশটি নেই; বাকিটা কাজ করছে।",
    "Done.": "হয়ে গেছে।",
    # pipeline
    "Owner": "মালিক",
    "Anyone": "যে কেউ",
    "Me": "আমি",
    "Nobody": "কেউ নয়",
    "Nobody (the pool)": "কেউ নয় (পুল)",
    "Channel": "চ্যানেল",
    "All channels": "সব চ্যানেল",
    "Fit at least": "ন্যূনতম মিল",
    "Search": "খুঁজুন",
    "Filter": "ছাঁকুন",
    "Leads in all: {n}": "মোট লিড: {n}",
    "Became clients": "ক্লায়েন্ট হয়েছে",
    "fit": "মিল",
    "(erased)": "(মুছে ফেলা)",
    "Your role sees the figures only, not the people.": "আপনার ভূমিকা শুধু সংখ্যা দেখে, মানুষদের নয়।",
    # lead
    "Lead": "লিড",
    "Captured": "ধরা হয়েছে",
    "Tier": "স্তর",
    "Fit": "মিল",
    "Matches": "মিলেছে",
    "Misses": "মেলেনি",
    "Red flags": "সতর্ক সংকেত",
    "None": "কিছু নেই",
    "yes": "হ্যাঁ",
    "no": "না",
    "unknown": "অজানা",
    "budget": "বাজেট",
    "authority": "কর্তৃত্ব",
    "need": "প্রয়োজন",
    "timeline": "সময়সীমা",
    "Qualify": "যোগ্য করুন",
    "Notes": "নোট",
    "Estimates": "প্রাক্কলন",
    "Total": "মোট",
    "Monthly fee": "মাসিক ফি",
    "Scope lines": "কাজের তালিকা",
    "Description": "বিবরণ",
    "Hours": "ঘণ্টা",
    "Amount": "পরিমাণ",
    "Signed by {name} on {day}": "{day} তারিখে {name} স্বাক্ষর করেছেন",
    "Lost": "হাতছাড়া",
    "Work authorised: the deposit is paid ({amount}).": "কাজের অনুমতি আছে: জামানত পরিশোধিত ({amount})।",
    "Work may not start yet: deposit {amount} due.": "কাজ এখনও শুরু করা যাবে না: জামানত {amount} বাকি।",
    "Change request": "পরিবর্তনের অনুরোধ",
    "in scope": "পরিধির মধ্যে",
    "out of scope": "পরিধির বাইরে",
    "Signed by": "স্বাক্ষরকারী",
    "Mark won": "জয়ী চিহ্নিত করুন",
    "Reason it was lost": "হাতছাড়ার কারণ",
    "Mark lost": "হাতছাড়া চিহ্নিত করুন",
    "Change requested": "চাওয়া পরিবর্তন",
    "Record change request": "পরিবর্তনের অনুরোধ লিখুন",
    "No estimate yet.": "এখনও কোনো প্রাক্কলন নেই।",
    "New estimate": "নতুন প্রাক্কলন",
    "Title": "শিরোনাম",
    "Kind": "ধরন",
    "Currency": "মুদ্রা",
    "Monthly fee (retainer)": "মাসিক ফি (রিটেইনার)",
    "Hours included a month (retainer)": "মাসে অন্তর্ভুক্ত ঘণ্টা (রিটেইনার)",
    "Hourly rate": "ঘণ্টাপ্রতি হার",
    "Line {n}: description": "লাইন {n}: বিবরণ",
    "Make the estimate": "প্রাক্কলন তৈরি করুন",
    "Number": "নম্বর",
    "Status": "অবস্থা",
    "Due": "বাকি",
    "Due date": "শেষ তারিখ",
    "Due on": "নির্ধারিত সময়",
    "Health": "স্বাস্থ্য",
    "The client's page: health explained, subscriptions, cancellation": "ক্লায়েন্টের পাতা: স্বাস্থ্যের ব্যাখ্যা, সাবস্ক্রিপশন, বাতিল",
    "Human takeover": "মানুষের হাতে নেওয়া",
    "Automated e-mails are paused: {by} took over on {day}.": "স্বয়ংক্রিয় ই-মেইল বন্ধ: {day} তারিখে {by} দায়িত্ব নিয়েছেন।",
    "End the takeover": "দায়িত্ব ফিরিয়ে দিন",
    "Who takes over": "কে দায়িত্ব নিচ্ছেন",
    "Reason": "কারণ",
    "Start a takeover": "দায়িত্ব নিন",
    "Export this person's data": "এই ব্যক্তির তথ্য রপ্তানি করুন",
    "Gathers what every service holds about the person into one document and a zip of the e-mails sent to them.": "প্রতিটি সার্ভিস এই ব্যক্তির বিষয়ে যা রাখে তা একটি নথিতে এবং তাঁকে পাঠানো ই-মেইলগুলো একটি zip-এ একত্র করে।",
    "Export": "রপ্তানি",
    "Export of a person's data": "একজন ব্যক্তির তথ্যের রপ্তানি",
    "The export could not be read.": "রপ্তানিটি পড়া যায়নি।",
    "Progress": "অগ্রগতি",
    "The person": "ব্যক্তি",
    "Asked": "অনুরোধের সময়",
    "Complete": "সম্পূর্ণ",
    "Service": "সার্ভিস",
    "Part": "অংশ",
    "pending": "অপেক্ষমাণ",
    "Download the document (JSON)": "নথিটি ডাউনলোড করুন (JSON)",
    "Download the e-mails (zip)": "ই-মেইলগুলো ডাউনলোড করুন (zip)",
    "Every service sends its part; this page looks again every few seconds.": "প্রতিটি সার্ভিস তার অংশ পাঠায়; এই পাতা কয়েক সেকেন্ড পরপর আবার দেখে।",
    "Erase this person": "এই ব্যক্তিকে মুছে ফেলুন",
    "Erases the person's data in every service. This cannot be undone.": "প্রতিটি সার্ভিস থেকে ব্যক্তির তথ্য মুছে ফেলে। এটি ফেরানো যায় না।",
    "Type ERASE to confirm": "নিশ্চিত করতে ERASE লিখুন",
    "Erase": "মুছে ফেলুন",
    "Timeline": "সময়রেখা",
    "Nothing yet.": "এখনও কিছু নেই।",
    "Record a payment of invoice {number}": "চালান {number}-এর পরিশোধ লিখুন",
    "Amount received": "প্রাপ্ত পরিমাণ",
    "Method": "পদ্ধতি",
    "Reference": "রেফারেন্স",
    "Record payment": "পরিশোধ লিখুন",
    # clients
    "Health band": "স্বাস্থ্যের স্তর",
    "Any": "যেকোনো",
    "Account owner": "অ্যাকাউন্টের দায়িত্বে",
    "Sort by": "সাজান",
    "Health (worst first)": "স্বাস্থ্য (খারাপ আগে)",
    "MRR (largest first)": "MRR (বড় আগে)",
    "Client since": "কবে থেকে ক্লায়েন্ট",
    "Client": "ক্লায়েন্ট",
    "Dunning": "তাগাদা",
    "No client matches.": "কোনো ক্লায়েন্ট মেলেনি।",
    "The lead's page: estimates, invoices, timeline": "লিডের পাতা: প্রাক্কলন, চালান, সময়রেখা",
    "Trend": "প্রবণতা",
    "Revenue": "আয়",
    "Churn risk": "চলে যাওয়ার ঝুঁকি",
    "How the health score is made": "স্বাস্থ্য স্কোর কীভাবে হয়",
    "Factor": "উপাদান",
    "Value": "মান",
    "Weight": "গুরুত্ব",
    "Why": "কেন",
    "Subscriptions": "সাবস্ক্রিপশন",
    "a month": "মাসে",
    "{hours} hours included": "{hours} ঘণ্টা অন্তর্ভুক্ত",
    "period ends": "মেয়াদ শেষ",
    "Offer": "প্রস্তাব",
    "No subscription.": "কোনো সাবস্ক্রিপশন নেই।",
    "Hours used": "ব্যবহৃত ঘণ্টা",
    "Cancellation": "বাতিল",
    "Save offer": "ধরে রাখার প্রস্তাব",
    "{n} months": "{n} মাস",
    "The client accepts the offer": "ক্লায়েন্ট প্রস্তাব গ্রহণ করেছেন",
    "Confirm the cancellation": "বাতিল নিশ্চিত করুন",
    "Comment": "মন্তব্য",
    "Start a cancellation": "বাতিল শুরু করুন",
    "No active subscription to cancel.": "বাতিল করার মতো সক্রিয় সাবস্ক্রিপশন নেই।",
    "Retention does not know this person as a client.": "রিটেনশন এই ব্যক্তিকে ক্লায়েন্ট হিসেবে চেনে না।",
    # invoices
    "Which invoices": "কোন চালান",
    "Open": "খোলা",
    "Overdue": "মেয়াদোত্তীর্ণ",
    "In dunning": "তাগাদায়",
    "Dunning step": "তাগাদার ধাপ",
    "overdue": "মেয়াদোত্তীর্ণ",
    "No invoice here.": "এখানে কোনো চালান নেই।",
    # review
    "Review of {period}, run on {day}.": "{period}-এর পর্যালোচনা, {day} তারিখে চালানো।",
    "Clients to let go": "যাদের ছেড়ে দেওয়া উচিত",
    "Reasons": "কারণ",
    "A year at stake": "এক বছরের ঝুঁকি",
    "Revenue to date": "এ পর্যন্ত আয়",
    "No client to let go.": "ছেড়ে দেওয়ার মতো ক্লায়েন্ট নেই।",
    "Tier changes": "স্তরের পরিবর্তন",
    "No review yet.": "এখনও কোনো পর্যালোচনা নেই।",
    "Run a review now": "এখনই পর্যালোচনা চালান",
    # economics
    "From": "থেকে",
    "To": "পর্যন্ত",
    "Show": "দেখান",
    "From {start} to {end}, in {currency}.": "{start} থেকে {end} পর্যন্ত, {currency}-তে।",
    "churn": "চার্ন",
    "clients": "ক্লায়েন্ট",
    "new clients": "নতুন ক্লায়েন্ট",
    "Funnel": "ফানেল",
    "MRR movements": "MRR-এর পরিবর্তন",
    "Cohorts": "কোহর্ট",
    "Cohorts: share still a client after each month": "কোহর্ট: প্রতি মাস শেষে কত অংশ এখনও ক্লায়েন্ট",
    "LTV:CAC per channel": "চ্যানেলভিত্তিক LTV:CAC",
    "Per channel": "চ্যানেল অনুযায়ী",
    "Cohort": "কোহর্ট",
    "Retention by month": "মাসভিত্তিক ধরে রাখা",
    "Payback (months)": "খরচ ওঠার সময় (মাস)",
    "Revenue churn": "আয়ের চার্ন",
    "Period": "সময়কাল",
    "Used": "ব্যবহৃত",
    "Included": "অন্তর্ভুক্ত",
    "Over": "অতিরিক্ত",
    "current": "চলতি",
    "ROI (first-year revenue vs spend)": "ROI (প্রথম বছরের আয় বনাম খরচ)",
    "Cost per lead": "প্রতি লিডে খরচ",
    "Cost per qualified lead": "প্রতি যোগ্য লিডে খরচ",
    "Median client lifetime (months)": "ক্লায়েন্টের মধ্যমা আয়ুষ্কাল (মাস)",
    "Revenue retention over a year": "এক বছরের আয় ধরে রাখা",
    "Leak (left unhappy; goal under 5%)": "অসন্তুষ্ট হয়ে চলে যাওয়া (লক্ষ্য ৫%-এর নিচে)",
    "Logo churn": "ক্লায়েন্ট চার্ন",
    "punctuality": "সময়মতো পরিশোধ",
    "failures": "ব্যর্থ পরিশোধ",
    "complaints": "অভিযোগ",
    "engagement": "সম্পৃক্ততা",
    "tenure": "মেয়াদ",
    "scope": "পরিধি",
    "subscription": "সাবস্ক্রিপশন",
    "up": "ঊর্ধ্বমুখী",
    "down": "নিম্নমুখী",
    "flat": "স্থির",
    # tasks and sequences
    "Which tasks": "কোন কাজ",
    "Done": "সম্পন্ন",
    "Nothing to do.": "করার কিছু নেই।",
    "the lead": "লিড",
    "Starts on": "শুরু হয়",
    "after": "পরে",
    "Stops on": "থামে",
    "Edit": "সম্পাদনা",
    "Definition (JSON)": "সংজ্ঞা (JSON)",
    "Save": "সংরক্ষণ",
    "No sequence could be read.": "কোনো ক্রম পড়া যায়নি।",
    # after an action
    "The lead is qualified.": "লিডটি যোগ্য হিসেবে চিহ্নিত।",
    "The estimate is made.": "প্রাক্কলন তৈরি হয়েছে।",
    "The deal is won; billing issues the deposit invoice.": "চুক্তি জয়ী; বিলিং জামানতের চালান ইস্যু করছে।",
    "The deal is marked lost.": "চুক্তিটি হাতছাড়া হিসেবে চিহ্নিত।",
    "The change request is recorded.": "পরিবর্তনের অনুরোধ লেখা হয়েছে।",
    "You took over: automated e-mails are paused.": "আপনি দায়িত্ব নিয়েছেন: স্বয়ংক্রিয় ই-মেইল বন্ধ।",
    "The takeover ended.": "দায়িত্ব ফিরিয়ে দেওয়া হয়েছে।",
    "The person is erased.": "ব্যক্তিকে মুছে ফেলা হয়েছে।",
    "The payment is recorded.": "পরিশোধ লেখা হয়েছে।",
    "Saved.": "সংরক্ষিত।",
    "The cancellation is confirmed.": "বাতিল নিশ্চিত হয়েছে।",
    "The task is done.": "কাজটি সম্পন্ন।",
    "The review ran.": "পর্যালোচনা চালানো হয়েছে।",
    # values from the services
    "awareness": "সচেতনতা",
    "interest": "আগ্রহ",
    "consideration": "বিবেচনা",
    "decision": "সিদ্ধান্ত",
    "action": "পদক্ষেপ",
    "retention": "ধরে রাখা",
    "advocacy": "সমর্থন",
    "churned": "চলে গেছে",
    "disqualified": "অযোগ্য",
    "admin": "প্রশাসক",
    "sales": "বিক্রয়",
    "finance": "অর্থ",
    "success": "সাফল্য",
    "viewer": "দর্শক",
    "leads": "লিডস",
    "nurture": "নার্চার",
    "billing": "বিলিং",
    "project": "প্রকল্প",
    "retainer": "রিটেইনার",
    "proposed": "প্রস্তাবিত",
    "won": "জয়ী",
    "lost": "হাতছাড়া",
    "open": "খোলা",
    "paid": "পরিশোধিত",
    "void": "বাতিল",
    "deposit": "জামানত",
    "active": "সক্রিয়",
    "paused": "স্থগিত",
    "cancelled": "বাতিল",
    "requested": "অনুরোধকৃত",
    "saved": "ধরে রাখা গেছে",
    "completed": "সম্পন্ন",
    "green": "সবুজ",
    "yellow": "হলুদ",
    "red": "লাল",
    "best": "সেরা",
    "good": "ভালো",
    "tolerable": "চলনসই",
    "fire": "ছেড়ে দেওয়ার মতো",
    "snoozed": "স্থগিত",
    "done": "সম্পন্ন",
    "all": "সব",
    "pause": "বিরতি",
    "discount": "ছাড়",
    "downgrade": "ছোট প্যাকেজ",
    "price": "দাম",
    "budget_cut": "বাজেট কমানো",
    "not_using": "ব্যবহার করছেন না",
    "poor_results": "খারাপ ফল",
    "switching_provider": "অন্য প্রদানকারী",
    "project_done": "প্রকল্প শেষ",
    "other": "অন্যান্য",
    "bank_transfer": "ব্যাংক ট্রান্সফার",
    "card": "কার্ড",
    "cash": "নগদ",
    "cheque": "চেক",
    "direct_debit": "ডাইরেক্ট ডেবিট",
    "paypal": "PayPal",
    "referral": "রেফারেল",
    "email.sent": "ই-মেইল পাঠানো",
    "email.opened": "ই-মেইল খোলা",
    "invoice.issued": "চালান ইস্যু",
    "payment.succeeded": "পরিশোধ সফল",
    "lead.captured": "লিড ধরা হয়েছে",
}

_FA: dict[str, str] = {
    "Pipeline": "قیف فروش",
    "Clients": "مشتریان",
    "Invoices": "صورت‌حساب‌ها",
    "Let-go review": "بازبینی کنارگذاری",
    "Economics": "اقتصاد",
    "My tasks": "کارهای من",
    "Sequences": "دنباله‌ها",
    "Pages": "صفحه‌ها",
    "Language": "زبان",
    "Change": "تغییر",
    "Sign in": "ورود",
    "Sign out": "خروج",
    "Skip to content": "رفتن به محتوا",
    "Token": "توکن",
    "or": "یا",
    "Sign in with your organisation's account": "ورود با حساب سازمان خود",
    "Paste your personal token (clientflow users add prints it), or the API key that clientflow run printed.": "توکن شخصی خود (که clientflow users add نشان می‌دهد) یا کلید API که clientflow run چاپ کرد را وارد کنید.",
    "Not allowed": "اجازه ندارید",
    "Something is wrong": "مشکلی پیش آمد",
    "Back to the pipeline": "بازگشت به قیف فروش",
    "The {service} service is not answering: its part of this page is missing; the rest works.": "سرویس {service} پاسخ نمی‌دهد: بخش مربوط به آن در این صفحه نیست؛ بقیه کار می‌کند.",
    "Done.": "انجام شد.",
    "Owner": "مسئول",
    "Anyone": "همه",
    "Me": "من",
    "Nobody": "هیچ‌کس",
    "Nobody (the pool)": "هیچ‌کس (استخر)",
    "Channel": "کانال",
    "All channels": "همه کانال‌ها",
    "Fit at least": "حداقل تناسب",
    "Search": "جستجو",
    "Filter": "پالایش",
    "Leads in all: {n}": "مجموع سرنخ‌ها: {n}",
    "Became clients": "مشتری شدند",
    "fit": "تناسب",
    "(erased)": "(پاک‌شده)",
    "Your role sees the figures only, not the people.": "نقش شما فقط ارقام را می‌بیند، نه افراد را.",
    "Lead": "سرنخ",
    "Captured": "ثبت‌شده",
    "Tier": "رده",
    "Fit": "تناسب",
    "Matches": "منطبق",
    "Misses": "نامنطبق",
    "Red flags": "هشدارها",
    "None": "هیچ",
    "yes": "بله",
    "no": "خیر",
    "unknown": "نامشخص",
    "budget": "بودجه",
    "authority": "اختیار",
    "need": "نیاز",
    "timeline": "زمان‌بندی",
    "Qualify": "ارزیابی",
    "Notes": "یادداشت",
    "Estimates": "برآوردها",
    "Total": "جمع",
    "Monthly fee": "هزینه ماهانه",
    "Scope lines": "بندهای کار",
    "Description": "شرح",
    "Hours": "ساعت",
    "Amount": "مبلغ",
    "Signed by {name} on {day}": "امضا شده توسط {name} در {day}",
    "Lost": "از دست رفته",
    "Work authorised: the deposit is paid ({amount}).": "مجوز شروع کار: پیش‌پرداخت پرداخت شد ({amount}).",
    "Work may not start yet: deposit {amount} due.": "هنوز نمی‌توان کار را شروع کرد: پیش‌پرداخت {amount} مانده است.",
    "Change request": "درخواست تغییر",
    "in scope": "در محدوده",
    "out of scope": "خارج از محدوده",
    "Signed by": "امضاکننده",
    "Mark won": "ثبت برد",
    "Reason it was lost": "دلیل از دست رفتن",
    "Mark lost": "ثبت باخت",
    "Change requested": "تغییر درخواستی",
    "Record change request": "ثبت درخواست تغییر",
    "No estimate yet.": "هنوز برآوردی نیست.",
    "New estimate": "برآورد جدید",
    "Title": "عنوان",
    "Kind": "نوع",
    "Currency": "ارز",
    "Monthly fee (retainer)": "هزینه ماهانه (قرارداد ماهانه)",
    "Hours included a month (retainer)": "ساعت‌های ماهانه (قرارداد ماهانه)",
    "Hourly rate": "نرخ ساعتی",
    "Line {n}: description": "بند {n}: شرح",
    "Make the estimate": "ساخت برآورد",
    "Number": "شماره",
    "Status": "وضعیت",
    "Due": "مانده",
    "Due date": "سررسید",
    "Due on": "موعد",
    "Health": "سلامت",
    "The client's page: health explained, subscriptions, cancellation": "صفحه مشتری: توضیح سلامت، اشتراک‌ها، لغو",
    "Human takeover": "واگذاری به انسان",
    "Automated e-mails are paused: {by} took over on {day}.": "ایمیل‌های خودکار متوقف است: {by} در {day} کار را به دست گرفت.",
    "End the takeover": "پایان واگذاری",
    "Who takes over": "چه کسی به دست می‌گیرد",
    "Reason": "دلیل",
    "Start a takeover": "شروع واگذاری",
    "Export this person's data": "برون‌بری داده‌های این شخص",
    "Gathers what every service holds about the person into one document and a zip of the e-mails sent to them.": "آنچه هر سرویس دربارهٔ این شخص نگه می‌دارد را در یک سند و رایانامه‌های فرستاده‌شده به او را در یک فایل zip گرد می‌آورد.",
    "Export": "برون‌بری",
    "Export of a person's data": "برون‌بری داده‌های یک شخص",
    "The export could not be read.": "برون‌بری خوانده نشد.",
    "Progress": "پیشرفت",
    "The person": "شخص",
    "Asked": "زمان درخواست",
    "Complete": "کامل",
    "Service": "سرویس",
    "Part": "بخش",
    "pending": "در انتظار",
    "Download the document (JSON)": "بارگیری سند (JSON)",
    "Download the e-mails (zip)": "بارگیری رایانامه‌ها (zip)",
    "Every service sends its part; this page looks again every few seconds.": "هر سرویس بخش خود را می‌فرستد؛ این صفحه هر چند ثانیه دوباره نگاه می‌کند.",
    "Erase this person": "پاک کردن این شخص",
    "Erases the person's data in every service. This cannot be undone.": "داده‌های این شخص را در همه سرویس‌ها پاک می‌کند. برگشت‌پذیر نیست.",
    "Type ERASE to confirm": "برای تأیید ERASE را بنویسید",
    "Erase": "پاک کردن",
    "Timeline": "خط زمانی",
    "Nothing yet.": "هنوز چیزی نیست.",
    "Record a payment of invoice {number}": "ثبت پرداخت صورت‌حساب {number}",
    "Amount received": "مبلغ دریافتی",
    "Method": "روش",
    "Reference": "مرجع",
    "Record payment": "ثبت پرداخت",
    "Health band": "بازه سلامت",
    "Any": "هر",
    "Account owner": "مسئول حساب",
    "Sort by": "مرتب‌سازی",
    "Health (worst first)": "سلامت (بدترین اول)",
    "MRR (largest first)": "MRR (بیشترین اول)",
    "Client since": "مشتری از",
    "Client": "مشتری",
    "Dunning": "پیگیری بدهی",
    "No client matches.": "مشتری‌ای مطابق نیست.",
    "The lead's page: estimates, invoices, timeline": "صفحه سرنخ: برآوردها، صورت‌حساب‌ها، خط زمانی",
    "Trend": "روند",
    "Revenue": "درآمد",
    "Churn risk": "خطر ریزش",
    "How the health score is made": "امتیاز سلامت چگونه ساخته می‌شود",
    "Factor": "عامل",
    "Value": "مقدار",
    "Weight": "وزن",
    "Why": "چرا",
    "Subscriptions": "اشتراک‌ها",
    "a month": "در ماه",
    "{hours} hours included": "{hours} ساعت شامل",
    "period ends": "پایان دوره",
    "Offer": "پیشنهاد",
    "No subscription.": "اشتراکی نیست.",
    "Hours used": "ساعت‌های مصرف‌شده",
    "Cancellation": "لغو",
    "Save offer": "پیشنهاد نگهداشت",
    "{n} months": "{n} ماه",
    "The client accepts the offer": "مشتری پیشنهاد را می‌پذیرد",
    "Confirm the cancellation": "تأیید لغو",
    "Comment": "توضیح",
    "Start a cancellation": "شروع لغو",
    "No active subscription to cancel.": "اشتراک فعالی برای لغو نیست.",
    "Retention does not know this person as a client.": "سرویس نگهداشت این شخص را به‌عنوان مشتری نمی‌شناسد.",
    "Which invoices": "کدام صورت‌حساب‌ها",
    "Open": "باز",
    "Overdue": "معوق",
    "In dunning": "در پیگیری بدهی",
    "Dunning step": "مرحله پیگیری",
    "overdue": "معوق",
    "No invoice here.": "صورت‌حسابی اینجا نیست.",
    "Review of {period}, run on {day}.": "بازبینی {period}، اجرا شده در {day}.",
    "Clients to let go": "مشتریانی که باید کنار گذاشت",
    "Reasons": "دلایل",
    "A year at stake": "درآمد یک سال در خطر",
    "Revenue to date": "درآمد تا امروز",
    "No client to let go.": "مشتری‌ای برای کنار گذاشتن نیست.",
    "Tier changes": "تغییرات رده",
    "No review yet.": "هنوز بازبینی‌ای نیست.",
    "Run a review now": "اجرای بازبینی اکنون",
    "From": "از",
    "To": "تا",
    "Show": "نمایش",
    "From {start} to {end}, in {currency}.": "از {start} تا {end}، به {currency}.",
    "churn": "ریزش",
    "clients": "مشتریان",
    "new clients": "مشتریان جدید",
    "Funnel": "قیف",
    "MRR movements": "تغییرات MRR",
    "Cohorts": "هم‌گروه‌ها",
    "Cohorts: share still a client after each month": "هم‌گروه‌ها: سهم مشتریان باقی‌مانده پس از هر ماه",
    "LTV:CAC per channel": "LTV:CAC هر کانال",
    "Per channel": "به تفکیک کانال",
    "Cohort": "هم‌گروه",
    "Retention by month": "نگهداشت ماه به ماه",
    "Payback (months)": "بازگشت هزینه (ماه)",
    "Revenue churn": "ریزش درآمد",
    "Period": "دوره",
    "Used": "مصرف‌شده",
    "Included": "شامل",
    "Over": "اضافه",
    "current": "جاری",
    "ROI (first-year revenue vs spend)": "بازده سرمایه (درآمد سال اول در برابر هزینه)",
    "Cost per lead": "هزینه به ازای هر سرنخ",
    "Cost per qualified lead": "هزینه به ازای هر سرنخ واجد شرایط",
    "Median client lifetime (months)": "میانهٔ عمر مشتری (ماه)",
    "Revenue retention over a year": "حفظ درآمد در یک سال",
    "Leak (left unhappy; goal under 5%)": "ریزش ناراضیان (هدف: زیر ۵٪)",
    "Logo churn": "ریزش مشتری",
    "punctuality": "خوش‌حسابی",
    "failures": "پرداخت‌های ناموفق",
    "complaints": "شکایت‌ها",
    "engagement": "تعامل",
    "tenure": "مدت همکاری",
    "scope": "محدوده کار",
    "subscription": "اشتراک",
    "up": "رو به بالا",
    "down": "رو به پایین",
    "flat": "ثابت",
    "Which tasks": "کدام کارها",
    "Done": "انجام شد",
    "Nothing to do.": "کاری نیست.",
    "the lead": "سرنخ",
    "Starts on": "شروع با",
    "after": "پس از",
    "Stops on": "توقف با",
    "Edit": "ویرایش",
    "Definition (JSON)": "تعریف (JSON)",
    "Save": "ذخیره",
    "No sequence could be read.": "هیچ دنباله‌ای خوانده نشد.",
    "The lead is qualified.": "سرنخ ارزیابی شد.",
    "The estimate is made.": "برآورد ساخته شد.",
    "The deal is won; billing issues the deposit invoice.": "معامله برده شد؛ صورت‌حساب پیش‌پرداخت صادر می‌شود.",
    "The deal is marked lost.": "معامله باخته ثبت شد.",
    "The change request is recorded.": "درخواست تغییر ثبت شد.",
    "You took over: automated e-mails are paused.": "کار را به دست گرفتید: ایمیل‌های خودکار متوقف شد.",
    "The takeover ended.": "واگذاری پایان یافت.",
    "The person is erased.": "شخص پاک شد.",
    "The payment is recorded.": "پرداخت ثبت شد.",
    "Saved.": "ذخیره شد.",
    "The cancellation is confirmed.": "لغو تأیید شد.",
    "The task is done.": "کار انجام شد.",
    "The review ran.": "بازبینی اجرا شد.",
    "awareness": "آگاهی",
    "interest": "علاقه",
    "consideration": "بررسی",
    "decision": "تصمیم",
    "action": "اقدام",
    "retention": "نگهداشت",
    "advocacy": "حمایت",
    "churned": "ریزش‌کرده",
    "disqualified": "ردشده",
    "admin": "مدیر",
    "sales": "فروش",
    "finance": "مالی",
    "success": "موفقیت مشتری",
    "viewer": "بیننده",
    "leads": "سرنخ‌ها",
    "nurture": "پرورش",
    "billing": "صورت‌حساب",
    "project": "پروژه",
    "retainer": "قرارداد ماهانه",
    "proposed": "پیشنهادشده",
    "won": "برده",
    "lost": "باخته",
    "open": "باز",
    "paid": "پرداخت‌شده",
    "void": "باطل",
    "deposit": "پیش‌پرداخت",
    "active": "فعال",
    "paused": "متوقف",
    "cancelled": "لغوشده",
    "requested": "درخواست‌شده",
    "saved": "نگه داشته شد",
    "completed": "انجام‌شده",
    "green": "سبز",
    "yellow": "زرد",
    "red": "قرمز",
    "best": "بهترین",
    "good": "خوب",
    "tolerable": "قابل تحمل",
    "fire": "کنارگذاشتنی",
    "snoozed": "به تعویق افتاده",
    "done": "انجام‌شده",
    "all": "همه",
    "pause": "توقف موقت",
    "discount": "تخفیف",
    "downgrade": "بسته کوچک‌تر",
    "price": "قیمت",
    "budget_cut": "کاهش بودجه",
    "not_using": "استفاده نمی‌کند",
    "poor_results": "نتایج ضعیف",
    "switching_provider": "تغییر ارائه‌دهنده",
    "project_done": "پایان پروژه",
    "other": "دیگر",
    "bank_transfer": "حواله بانکی",
    "card": "کارت",
    "cash": "نقد",
    "cheque": "چک",
    "direct_debit": "برداشت مستقیم",
    "paypal": "PayPal",
    "referral": "معرفی",
    "email.sent": "ایمیل فرستاده شد",
    "email.opened": "ایمیل باز شد",
    "invoice.issued": "صدور صورت‌حساب",
    "payment.succeeded": "پرداخت موفق",
    "lead.captured": "ثبت سرنخ",
}

_TABLES: dict[str, dict[str, str]] = {"en": _EN, "bn": _BN | _FIT["bn"], "fa": _FA | _FIT["fa"]}


def direction(lang: str) -> str:
    return "rtl" if lang in RTL else "ltr"


def translator(lang: str) -> Callable[..., str]:
    """``_(text, **values)``: the text in ``lang`` (else English), with ``{name}`` filled in."""
    table = _TABLES.get(lang, {})

    def _(text: Any, **values: Any) -> str:
        if text is None:
            return ""
        words = table.get(str(text), str(text))
        return words.format(**values) if values else words

    return _


def pick_language(preferred: Iterable[str], accept_language: str) -> str:
    """The first of the person's languages the console speaks; else the browser's
    Accept-Language (by its q weights); else English."""
    for lang in preferred:
        primary = lang.strip().lower().split("-")[0]
        if primary in LANGUAGES:
            return primary
    ranked: list[tuple[float, int, str]] = []
    for index, part in enumerate(accept_language.split(",")):
        pieces = part.strip().split(";")
        tag = pieces[0].strip().lower().split("-")[0]
        weight = 1.0
        for p in pieces[1:]:
            if p.strip().startswith("q="):
                try:
                    weight = float(p.strip()[2:])
                except ValueError:
                    weight = 0.0
        if tag in LANGUAGES and weight > 0:
            ranked.append((-weight, index, tag))
    return sorted(ranked)[0][2] if ranked else "en"


# --------------------------------------------------------------------------- filters


def percent(value: Any, lang: str) -> str:
    """A share ("0.25") as a percentage in the language's digits; nothing known: a dash."""
    if value in (None, ""):
        return "—"
    try:
        share = Decimal(str(value)) * 100
    except InvalidOperation:
        return str(value)
    return f"{format_number(share, lang, decimals=1)}%"


def clock(value: Any, lang: str) -> str:
    """The time of day of an RFC 3339 moment (UTC as the services give it), e.g. ``14:05``."""
    if not value:
        return ""
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return ""
    locale = LOCALES.get(lang, "en")
    return native_digits(babel_dates.format_time(moment, format="short", locale=locale, tzinfo=None), lang)


MONEY_METRICS = frozenset({"cac", "ltv", "arpa", "cost_per_lead", "cost_per_qualified_lead"})
SHARE_METRICS = frozenset({"nrr", "grr", "revenue_churn", "rate", "roi", "share"})


def metric(value: Any, key: str, currency: str | None, lang: str) -> str:
    """One figure of the economics as it reads: money, a share, a ratio or months."""
    if value in (None, ""):
        return "—"
    if key in MONEY_METRICS:
        return format_money(value, currency, lang)
    if key in SHARE_METRICS:
        return percent(value, lang)
    return format_number(value, lang, decimals=2 if key == "ltv_cac" else 1)


def summary(detail: Any, lang: str) -> str:
    """A small mapping as ``key: value`` pairs (an event's detail), money-aware."""
    if not isinstance(detail, dict):
        return "" if detail is None else str(detail)
    _ = translator(lang)
    currency = detail.get("currency")
    parts = []
    for key, value in detail.items():
        if value in (None, "", [], {}) or key == "currency" or key.endswith("_id"):
            continue
        if key in ("amount", "fee", "leaked") and currency:
            shown = format_money(value, currency, lang)
        elif isinstance(value, bool):
            shown = _("yes") if value else _("no")
        elif isinstance(value, int | float):
            shown = format_number(value, lang)
        else:
            shown = _(str(value))
        parts.append(f"{_(key)}: {shown}")
    return " · ".join(parts)


def template_globals() -> dict[str, Any]:
    return {"NAV": NAV, "DONE": DONE, "LANGUAGE_NAMES": LANGUAGE_NAMES, "METRIC_LABELS": METRIC_LABELS}


def template_filters() -> dict[str, Callable[..., Any]]:
    """Filters that take the language explicitly (``| percent(lang)``)."""
    return {"percent": percent, "clock": clock, "metric": metric, "summary": summary}
