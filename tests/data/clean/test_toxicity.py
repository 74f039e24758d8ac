from llm_jax.data.clean.toxicity import Lexicon, default_lexicon, is_toxic, normalize_tokens, toxic_spans, toxicity


def test_clean_text_scores_zero():
    text = "The quick brown fox jumps over the lazy dog. Shall I compare thee to a summer's day?"
    assert toxicity(text) == 0.0 and not is_toxic(text)
    assert toxicity("") == 0.0


def test_planted_words_and_obfuscations_are_found():
    assert toxicity("you idiot") == 0.5
    for text in ("You IDIOT!", "what a 1d10t", "f*ck this", "f**k this", "this is sh!t", "fuuuuuck this",
                 "you sh1tty m0r0n", "bitches everywhere", "what a b1tch"):
        assert toxicity(text) > 0, text
        assert is_toxic(text, threshold=0.0), text


def test_phrases_cover_all_their_words():
    spans, n = toxic_spans("Just go and kill yourself now")
    assert n == 6 and spans == [(3, 5)]
    assert toxicity("Just go and kill yourself now") == 2 / 6
    assert toxicity("i'll kill you") == 1.0  # "i'll" is two tokens: i, ll


def test_substrings_and_masks_of_clean_words_are_not_flagged():
    for text in ("Scunthorpe United won at home.", "A classic assessment of the passage.", "Cockburn and Dickens",
                 "Shiitake mushrooms; a pass**** field", "cocktail hour in Essex", "therapist", "a*b*c"):
        assert toxicity(text) == 0.0, text


def test_threshold_and_custom_lexicon():
    text = "one bad word among ninety nine clean ones: idiot " + "fine " * 90
    assert 0 < toxicity(text) < 0.02
    assert is_toxic(text, threshold=0.005) and not is_toxic(text, threshold=0.02)
    custom = Lexicon(["gadzooks", "by my troth"])
    assert toxicity("Gadzooks, by my troth!", custom) == 1.0
    assert toxicity("you idiot", custom) == 0.0
    assert normalize_tokens("Y0u 1d10T!") == ["you", "idiot"]
    assert default_lexicon() is default_lexicon()  # loaded once
    assert len(default_lexicon().words) >= 30
