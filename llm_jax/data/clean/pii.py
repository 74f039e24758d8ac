"""Detection and redaction of personal information (PII) in a document: regular expressions plus checksums.

Modelled on datatrove's `PIIFormatter`, which FineWeb applies to email and IP addresses; this adds phone numbers,
payment-card numbers and IBANs. Every match becomes a fixed placeholder per kind (`PLACEHOLDERS`), never a random
fake value, so `redact` is a pure function and idempotent (no placeholder can match a pattern again).

What counts as a match (kinds are tried in the order of `KINDS`, each on the text the previous kinds left):
- email: local@domain.tld, dot-separated domain labels and a TLD of 2+ letters.
- iban: 2 capital letters, 2 check digits, then letters/digits in optional single-space groups; the length must be
  that country's registered IBAN length (`_IBAN_LENGTHS`, ISO 13616) and the number must pass the mod-97 check.
  Lower-case IBANs are not matched.
- card: 13-19 digits, starting like a card of a major network (2, 3, 4, 5 or 6: Mastercard, Amex/Diners/JCB, Visa,
  Discover/UnionPay), ungrouped or grouped as cards print them (4-4-4-4, 4-4-4-4-3, Amex 4-6-5, Diners 4-6-4, one
  kind of separator: space or hyphen), passing the Luhn check. Luhn passes 1 in 10 random numbers, so an ungrouped
  13-19 digit reference number with such a prefix may be redacted.
- phone: North-American (optional +1, area code and exchange starting 2-9, separators required: "(202) 555-0143",
  "202-555-0143", "+1 202.555.0143"), or international "+CC ..." with 8-15 digits in all (E.164). Plain digit runs,
  dates (2024-01-15, 15.01.2024), times, years and 7-digit local numbers are not matched; an international number
  directly followed by another short number group ("+44 20 7946 0958 12") absorbs it.
- ip: IPv4 dotted quads with octets 0-255 and IPv6 addresses (validated by `ipaddress`), redacted only when the
  address is public, as datatrove's `public_ip_validator` does: private (10/8, 172.16/12, 192.168/16, fc00::/7),
  loopback, link-local, shared (100.64/10), documentation (192.0.2/24, 198.51.100/24, 203.0.113/24,
  2001:db8::/32), unspecified, broadcast, reserved (240/4) and multicast addresses are kept; IPv6 must also be in
  2000::/3 (global unicast), so code like "a::b" is kept. Version strings: a dotted quad is indistinguishable from
  an address by form ("1.2.3.4" is a routable address), so it is kept only when a version marker ("v", "version",
  "release", "ver.") directly precedes it or it is part of a longer dotted run ("1.2.3.4.5").

Limits: names, street addresses, national ID numbers and anything written with unusual separators or spelled out
("john at example dot com") are not found; the rules are tuned for English-language web text.
References: datatrove `pipeline/formatters/pii.py`; Penedo et al. 2024, "The FineWeb Datasets"; ISO 13616 (IBAN);
ISO/IEC 7812 (Luhn); ITU-T E.164.
"""

from __future__ import annotations

import ipaddress
import re

KINDS = ("email", "iban", "card", "phone", "ip")
PLACEHOLDERS = {"email": "<EMAIL>", "iban": "<IBAN>", "card": "<CARD>", "phone": "<PHONE>", "ip": "<IP>"}

_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+"
                    r"[A-Za-z]{2,}(?![\w-])")
_IBAN_LENGTHS = dict((e[:2], int(e[2:])) for e in (
    "AD24 AE23 AL28 AT20 AZ28 BA20 BE16 BG22 BH22 BR29 CH21 CR22 CY28 CZ24 DE22 DK18 DO28 EE20 EG29 ES24 FI18 FO18 "
    "FR27 GB22 GE22 GI23 GL18 GR27 GT28 HR21 HU28 IE22 IL23 IQ23 IS26 IT27 JO30 KW30 KZ20 LB28 LC32 LI21 LT20 LU20 "
    "LV21 MC27 MD24 ME22 MK19 MR27 MT31 MU30 NL18 NO15 PK24 PL28 PS29 PT25 QA29 RO24 RS22 SA24 SC31 SE24 SI19 SK24 "
    "SM27 ST25 SV28 TL23 TN24 TR26 UA29 VA22 VG24 XK20").split())
_IBAN = re.compile(r"(?<!\w)(?:" + "|".join(rf"{cc}\d\d(?: ?[A-Z0-9]){{{n - 4}}}" for cc, n in _IBAN_LENGTHS.items())
                   + r")(?!\w)")
_CARD = re.compile(r"(?<![\w+.-])[2-6]\d(?:[ -]?\d){11,17}(?![\w]|[.-]\d)")
_CARD_GROUPS = {(4, 4, 4, 4), (4, 4, 4, 4, 3), (4, 6, 5), (4, 6, 4)}  # grouped as printed on cards
_NANP = r"(?:\+1[ .-]?|1[ .-])?(?:\([2-9]\d\d\) ?|[2-9]\d\d[ .-])[2-9]\d\d[ .-]\d{4}"
_INTL = r"\+\d{1,3}(?:[ .-]?(?:\(\d{1,4}\)|\d{1,5})){1,7}"
_PHONE = re.compile(rf"(?<![\w+.-])(?:{_NANP}|{_INTL})(?![\w]|[.-]\d)")
_IPV4 = re.compile(r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
                   r"(?![\w]|\.\d)")
_IPV6 = re.compile(r"(?<![\w:.])(?=[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*:)[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}"
                   r"(?:\.\d{1,3}){0,3}(?![\w:])")
_VERSION = re.compile(r"(?:\bv|\bversion|\brelease|\bver\.?)\s*$", re.IGNORECASE)
_GLOBAL_UNICAST = ipaddress.ip_network("2000::/3")


def luhn_ok(digits: str) -> bool:
    """The Luhn (mod-10) check of a digit string: every second digit from the right doubled."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def iban_ok(iban: str) -> bool:
    """The ISO 13616 check of an IBAN without spaces: registered length, then mod 97 == 1 of the rearranged number."""
    if _IBAN_LENGTHS.get(iban[:2]) != len(iban) or not iban.isalnum():
        return False
    return int("".join(str(int(c, 36)) for c in iban[4:] + iban[:4])) % 97 == 1


def public_ip(address: str) -> bool:
    """True for a valid IPv4/IPv6 address that is globally routable unicast (see the module docstring)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if not ip.is_global or ip.is_multicast or ip.is_reserved:
        return False
    return ip.version == 4 or ip in _GLOBAL_UNICAST


def _sub_iban(m: re.Match) -> str:
    s = m.group(0)
    return PLACEHOLDERS["iban"] if iban_ok(s.replace(" ", "")) else s


def _sub_card(m: re.Match) -> str:
    s = m.group(0)
    digits = s.replace(" ", "").replace("-", "")
    groups = tuple(len(g) for g in re.split(r"[ -]", s))
    if len(groups) > 1 and (len(set(s) - set(digits)) > 1 or groups not in _CARD_GROUPS):
        return s
    if not 13 <= len(digits) <= 19 or not luhn_ok(digits):
        return s
    return PLACEHOLDERS["card"]


def _sub_phone(m: re.Match) -> str:
    s = m.group(0)
    digits = sum(c.isdigit() for c in s)
    enough = digits >= 10 or (s.startswith("+") and digits >= 8)
    return PLACEHOLDERS["phone"] if enough and digits <= 15 else s


def _sub_ip(m: re.Match) -> str:
    s = m.group(0)
    before = m.string[max(0, m.start() - 12):m.start()]
    if "." in s and ":" not in s and _VERSION.search(before):
        return s
    return PLACEHOLDERS["ip"] if public_ip(s) else s


def _sub(pattern: re.Pattern, fn, text: str) -> tuple[str, int]:
    count = 0

    def replace(m: re.Match) -> str:
        nonlocal count
        out = fn(m)
        count += out != m.group(0)
        return out

    return pattern.sub(replace, text), count


def redact(text: str) -> tuple[str, dict[str, int]]:
    """`text` with every email, IBAN, card number, phone number and public IP address replaced by its kind's
    placeholder, and the number of replacements per kind (every kind present, 0 when none)."""
    counts = {}
    text, counts["email"] = _sub(_EMAIL, lambda m: PLACEHOLDERS["email"], text)
    text, counts["iban"] = _sub(_IBAN, _sub_iban, text)
    text, counts["card"] = _sub(_CARD, _sub_card, text)
    text, counts["phone"] = _sub(_PHONE, _sub_phone, text)
    text, n4 = _sub(_IPV4, _sub_ip, text)
    text, n6 = _sub(_IPV6, _sub_ip, text)
    counts["ip"] = n4 + n6
    return text, counts


def find(text: str) -> dict[str, int]:
    """The counts of `redact(text)` alone."""
    return redact(text)[1]
