"""Personal data and credentials in training text, by kind; values are never returned.

Credentials come from detect-secrets' maintained regex detectors (its entropy detectors
flag ordinary prose and are left out). Numbers with a check digit are validated with
python-stdnum (card Luhn, IBAN mod 97, US SSN area/group rules) and phone numbers with
phonenumbers (Google's libphonenumber metadata), so a random digit run is not reported.
"""

from __future__ import annotations

import re
from functools import cache

import phonenumbers
from detect_secrets.plugins.base import RegexBasedDetector
from stdnum import iban, luhn
from stdnum.us import ssn

EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}\b")
BEARER = re.compile(r"\bBearer\s+[A-Za-z0-9._~+/-]{20,}=*")
CARD = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")
# Issuer prefixes of the card networks (Visa, Mastercard, Amex, Discover, JCB, Diners):
# a Luhn-valid order number with another prefix is not a card.
CARD_ISSUER = re.compile(r"^(?:4|5[1-5]|2[2-7]|3[47]|3[068]|35|6011|65)")
IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
SSN = re.compile(r"\b\d{3}-\d{2}-\d{4}\b")
# Cheap screens before the slow matchers. Every detect-secrets pattern kept needs a run
# of 16 or more token characters, a key header or credentials in a URL; a phone number
# needs 7 or more digits among phone punctuation.
DIGIT = re.compile(r"\d")
LONG_TOKEN = re.compile(r"[A-Za-z0-9_+/=-]{16,}")
KEY_OR_URL_CREDENTIALS = re.compile(r"-----BEGIN|://[^\s:@/]+:[^\s@/]+@")
# Digits with phone, card or SSN punctuation between them, at least 7 characters long.
NUMBER_RUN = re.compile(r"\+?\(?\d[\d\s().-]{5,}\d")
IBAN_START = re.compile(r"[A-Z]{2}\d{2}")
PHONE_SCREEN = re.compile(r"\+?\(?\d(?:[\s().-]{0,3}\d){6,14}")
# Public IPs are everywhere in technical answers: not personal data by themselves.
SKIPPED_DETECTORS = frozenset({"IPPublicDetector"})


@cache
def _credential_patterns() -> tuple[tuple[str, re.Pattern[str]], ...]:
    import importlib
    import inspect
    import pkgutil

    import detect_secrets.plugins

    found = []
    for module_info in pkgutil.iter_modules(detect_secrets.plugins.__path__):
        module = importlib.import_module(f"detect_secrets.plugins.{module_info.name}")
        for name, plugin in inspect.getmembers(module, inspect.isclass):
            if (
                issubclass(plugin, RegexBasedDetector)
                and plugin is not RegexBasedDetector
                and plugin.__module__ == module.__name__
                and name not in SKIPPED_DETECTORS
            ):
                detector = plugin()
                kind = re.sub(r"\W+", "_", detector.secret_type.lower()).strip("_")
                found += [(kind, pattern) for pattern in detector.denylist]
    return tuple(sorted(found, key=lambda pair: pair[0]))


def _is_card(digits: str) -> bool:
    return 13 <= len(digits) <= 19 and bool(CARD_ISSUER.match(digits)) and luhn.is_valid(digits)


def _has_phone(text: str) -> bool:
    for candidate in PHONE_SCREEN.finditer(text):
        start, end = candidate.span()
        window = text[max(0, start - 2) : end + 2]
        matcher = phonenumbers.PhoneNumberMatcher(
            window, "US", leniency=phonenumbers.Leniency.VALID
        )
        if matcher.has_next():
            return True
    return False


def _may_hold_credentials(text: str) -> bool:
    """A long token with a digit or a capital letter (identifiers such as
    `calledprocesserror` are neither), a key header or credentials in a URL."""
    if KEY_OR_URL_CREDENTIALS.search(text):
        return True
    return any(not t.islower() or DIGIT.search(t) for t in LONG_TOKEN.findall(text))


def pii_kinds(text: str) -> list[str]:
    """The kinds of personal data or credentials in text, sorted, each named once."""
    kinds: set[str] = set()
    if _may_hold_credentials(text):
        kinds |= {kind for kind, pattern in _credential_patterns() if pattern.search(text)}
    if "@" in text and EMAIL.search(text):
        kinds.add("email")
    if "Bearer" in text and BEARER.search(text):
        kinds.add("bearer_token")
    if IBAN_START.search(text) and any(iban.is_valid(m.group()) for m in IBAN.finditer(text)):
        kinds.add("iban")
    # Cards, SSNs and phone numbers are looked for only in runs of digits.
    numbers = " ; ".join(NUMBER_RUN.findall(text))
    if numbers:
        if any(_is_card(re.sub(r"\D", "", m.group())) for m in CARD.finditer(numbers)):
            kinds.add("card_number")
        if any(ssn.is_valid(m.group()) for m in SSN.finditer(numbers)):
            kinds.add("us_ssn")
        if _has_phone(numbers):
            kinds.add("phone")
    return sorted(kinds)
