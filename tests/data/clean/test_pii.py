from llm_jax.data.clean.pii import KINDS, PLACEHOLDERS, iban_ok, luhn_ok, public_ip, redact

PLANTED = {
    "email": ["john.doe@example.com", "a_b+tag@mail.co.uk"],
    "phone": ["(202) 555-0143", "202-555-0143", "+1 202.555.0143", "+44 20 7946 0958", "+49 (0)30 1234567",
              "+33 1 23 45 67 89"],
    "card": ["4111 1111 1111 1111", "5500-0000-0000-0004", "378282246310005", "4012888888881881"],
    "iban": ["GB82 WEST 1234 5698 7654 32", "DE89370400440532013000", "FR14 2004 1010 0505 0001 3M02 606"],
    "ip": ["8.8.8.8", "1.2.3.4", "2606:4700:4700::1111", "2001:4860:4860::8888"],
}
NEAR_MISSES = [
    "The meeting is on 2024-01-15 at 10:30, or on 15.01.2024, or 01/15/2024.",
    "Upgrade to version 1.2.3.4 or v2.0.0.1; the dotted run 1.2.3.4.5 is no address.",
    "Private and reserved hosts 10.0.0.1, 127.0.0.1, 192.168.1.1, 172.16.5.4, 100.64.0.1, 192.0.2.7, 0.0.0.0, "
    "255.255.255.255, 224.0.0.1, fe80::1, ::1, 2001:db8::1 stay.",
    "A card-like 4111 1111 1111 1112 fails Luhn; DE89 3704 0044 0532 0130 01 fails mod 97.",
    "In 1999 there were 1,234,567 people and 42 cats; pi is 3.14159; ISBN 978-3-16-148410-0.",
    "Call extension 555-0143 or 123-456-7890 (no such area code); the score was +5 points; 12:30:45.",
    "C++ code: std::vector<int> v; a::b::c; and an order number 20240115123.",
    "Shakespeare wrote 38 plays and 154 sonnets between 1589 and 1613.",
]


def test_planted_values_of_every_kind_are_redacted_and_counted():
    for kind, values in PLANTED.items():
        for value in values:
            text = f"Contact: {value}. Thanks!"
            out, counts = redact(text)
            assert out == f"Contact: {PLACEHOLDERS[kind]}. Thanks!", (kind, value, out)
            assert counts == {k: int(k == kind) for k in KINDS}, (kind, value, counts)


def test_mixed_document_counts_per_kind():
    text = ("Mail john@example.org or jane@example.net, call (415) 555-2671. Pay 4111-1111-1111-1111 "
            "to GB82 WEST 1234 5698 7654 32. Server 8.8.8.8 (and 10.0.0.1).")
    out, counts = redact(text)
    assert counts == {"email": 2, "iban": 1, "card": 1, "phone": 1, "ip": 1}
    assert out == ("Mail <EMAIL> or <EMAIL>, call <PHONE>. Pay <CARD> to <IBAN>. Server <IP> (and 10.0.0.1).")
    assert set(PLACEHOLDERS) == set(KINDS)


def test_near_misses_are_left_alone():
    for text in NEAR_MISSES:
        out, counts = redact(text)
        assert out == text, out
        assert sum(counts.values()) == 0


def test_checksums():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("GB82WEST12345698765432") and not iban_ok("GB82WEST12345698765433")
    assert not iban_ok("GB82WEST1234569876543")  # one character short of GB's 22
    assert public_ip("8.8.8.8") and not public_ip("192.168.0.1") and not public_ip("300.1.1.1")


def test_idempotent_and_deterministic():
    texts = NEAR_MISSES + [f"x {v} y {w}" for vs in PLANTED.values() for v in vs for w in PLANTED["phone"][:2]]
    for text in texts:
        once = redact(text)
        assert redact(text) == once
        assert redact(once[0])[0] == once[0]
        assert sum(redact(once[0])[1].values()) == 0
