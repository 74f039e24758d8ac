from llm_jax.data.clean.langid import LanguageReport, identify

SENTENCES = {
    "de": "Der Zug nach München hatte heute Morgen fast eine Stunde Verspätung, weil ein Baum auf den Gleisen lag.",
    "fr": "Nous avons passé tout l'après-midi au marché, puis nous sommes rentrés à pied le long de la rivière.",
    "es": "Mi abuela siempre prepara una sopa de verduras los domingos, y toda la familia viene a comer con ella.",
    "ru": "Вчера вечером мы долго гуляли по парку и разговаривали о книгах, которые прочитали этим летом.",
}


def shakespeare_passage() -> str:
    from llm_jax.data.corpus import shakespeare_scenes
    return shakespeare_scenes()[5]


def test_languages_are_identified():
    lang, prob = identify(shakespeare_passage())
    assert lang == "en" and prob > 0.9
    for code, text in SENTENCES.items():
        lang, prob = identify(text)
        assert lang == code and prob > 0.9, (code, lang, prob)


def test_nothing_to_detect_is_unknown():
    for text in ("", "   ", "12345 678 90", "3.14 2024-01-15 !!!"):
        assert identify(text) == ("unknown", 0.0)


def test_deterministic_and_reads_only_a_prefix():
    text = SENTENCES["fr"] + " " + SENTENCES["de"]
    assert identify(text) == identify(text)
    assert identify(text, max_chars=len(SENTENCES["fr"]))[0] == "fr"
    mixed = "ok " * 3 + SENTENCES["es"][:40]
    assert identify(mixed) == identify(mixed)


def test_language_report_counts_documents():
    report = LanguageReport().update([SENTENCES["de"], SENTENCES["de"], SENTENCES["ru"], "", shakespeare_passage()])
    assert report.counts == {"de": 2, "ru": 1, "unknown": 1, "en": 1}
    assert report.total == 5
    assert list(report.shares())[0] == "de" and report.shares()["de"] == 0.4
    assert report.as_dict()["documents"] == 5
    strict = LanguageReport(min_probability=1.01)
    assert strict.add(SENTENCES["de"]) == "unknown"
