"""Tokenisers, the vocabulary and text -> ids encoding (core/text.py)."""

from __future__ import annotations

import json

import pytest

from core.text import PAD, PAD_ID, UNK, UNK_ID, TextConfig, TextEncoder, Tokenizer, Vocabulary, clean_text


# ---- tokenisers ---------------------------------------------------------------------------------

def test_en_turns_html_line_breaks_into_spaces():
    tokens = Tokenizer("en")("A wonderful film.<br />Loved it.<BR>Really<br/>good")
    assert "<br" not in " ".join(tokens) and "br" not in tokens and "/>" not in tokens
    assert tokens == ["a", "wonderful", "film", ".", "loved", "it", ".", "really", "good"]


def test_clean_text_unescapes_entities_and_drops_nul():
    assert clean_text("fish &amp; chips\x00") == "fish & chips "


def test_en_splits_clitics_and_punctuation():
    assert Tokenizer("en")("It's GREAT!") == ["it", "'s", "great", "!"]


def test_lowercase_option():
    assert Tokenizer("en", lowercase=False)("It's GREAT") == ["It", "'s", "GREAT"]
    assert Tokenizer("en", lowercase=True)("It's GREAT") == ["it", "'s", "great"]


def test_zh_segments_chinese_words_with_jieba():
    tokens = Tokenizer("zh")("我喜欢这部电影，非常好看")
    assert "".join(tokens) == "我喜欢这部电影，非常好看"
    assert "喜欢" in tokens and "电影" in tokens  # words, not single characters
    assert len(tokens) < len("我喜欢这部电影，非常好看")


def test_xx_handles_other_scripts():
    assert Tokenizer("xx")("Привет мир! Ça va?") == ["привет", "мир", "!", "ça", "va", "?"]


def test_whitespace_tokenizer_and_no_space_tokens():
    assert Tokenizer("whitespace")("a  b\tc\n") == ["a", "b", "c"]
    assert Tokenizer("en")("  two   spaces \n\n here ") == ["two", "spaces", "here"]


def test_unknown_tokenizer_is_a_clear_error():
    with pytest.raises(ValueError, match="Unknown tokenizer 'klingon'.*en, zh, xx, whitespace"):
        Tokenizer("klingon")
    with pytest.raises(ValueError, match="'tokenizer' parameter must be one of"):
        TextConfig(tokenizer="klingon").validate()


@pytest.mark.parametrize("name", ["max_vocab_size", "min_freq", "max_length"])
def test_text_config_rejects_non_positive_ints(name):
    with pytest.raises(ValueError, match=f"'{name}' parameter must be an int >= 1. Got 0 instead"):
        TextConfig(**{name: 0}).validate()


# ---- vocabulary ---------------------------------------------------------------------------------

TOKENS = [["b", "a", "c", "a"], ["a", "b", "d"], ["e", "a"]]  # a:4 b:2 c:1 d:1 e:1


def test_vocab_starts_with_pad_and_unk_and_ranks_by_frequency():
    vocab = Vocabulary.build(TOKENS)
    assert vocab.itos[:2] == [PAD, UNK] and vocab.stoi[PAD] == PAD_ID == 0 and vocab.stoi[UNK] == UNK_ID == 1
    assert vocab.itos[2:] == ["a", "b", "c", "d", "e"]  # frequency, ties alphabetical


def test_vocab_order_is_reproducible_whatever_the_input_order():
    shuffled = [list(reversed(t)) for t in reversed(TOKENS)]
    assert Vocabulary.build(shuffled).itos == Vocabulary.build(TOKENS).itos


def test_max_vocab_size_keeps_most_frequent():
    vocab = Vocabulary.build(TOKENS, max_size=2)
    assert vocab.itos == [PAD, UNK, "a", "b"]
    assert vocab.encode(["a", "c", "b", "zzz"]) == [2, UNK_ID, 3, UNK_ID]


def test_min_freq_turns_rare_tokens_into_unk():
    vocab = Vocabulary.build(TOKENS, min_freq=2)
    assert vocab.itos == [PAD, UNK, "a", "b"]
    assert "c" not in vocab


def test_special_tokens_in_text_are_not_duplicated():
    vocab = Vocabulary.build([[PAD, UNK, "x"]])
    assert vocab.itos == [PAD, UNK, "x"]


def test_vocab_json_round_trip(tmp_path):
    vocab = Vocabulary.build(TOKENS + [["ümlaut", "中文"]])
    path = tmp_path / "vocab.json"
    vocab.save(path)
    assert json.loads(path.read_text(encoding="utf-8"))["itos"] == vocab.itos
    loaded = Vocabulary.load(path)
    assert loaded.itos == vocab.itos and loaded.stoi == vocab.stoi
    assert [p.name for p in tmp_path.iterdir()] == ["vocab.json"]  # no temporary file left


def test_vocab_rejects_malformed_json():
    with pytest.raises(ValueError, match="must start with '<pad>' and '<unk>'"):
        Vocabulary(["a", "b"])
    with pytest.raises(ValueError, match="list of strings under 'itos'"):
        Vocabulary.from_json({"itos": [PAD, UNK, 3]})
    with pytest.raises(ValueError, match="same token twice"):
        Vocabulary([PAD, UNK, "a", "a"])


def test_decode_maps_ids_back_and_out_of_range_to_unk():
    vocab = Vocabulary.build(TOKENS)
    assert vocab.decode(vocab.encode(["a", "e"]) + [999, -1]) == ["a", "e", UNK, UNK]


# ---- encoder ------------------------------------------------------------------------------------

def test_encoder_fit_and_encode():
    encoder = TextEncoder.fit(TextConfig(tokenizer="en"), ["good movie", "bad movie", "Movie!"])
    assert encoder.vocab.itos[2] == "movie"
    enc = encoder.encode("A good MOVIE")
    assert enc.tokens == ["a", "good", "movie"]
    assert enc.ids == [UNK_ID, encoder.vocab.stoi["good"], encoder.vocab.stoi["movie"]]
    assert enc.truncated == 0 and not enc.empty


def test_max_length_truncates_and_reports_the_cut():
    encoder = TextEncoder.fit(TextConfig(tokenizer="whitespace", max_length=3), ["a b c d e f g"])
    enc = encoder.encode("a b c d e f g")
    assert enc.tokens == ["a", "b", "c"] and len(enc.ids) == 3 and enc.truncated == 4
    assert len(encoder.encode("a b c d e", max_length=2).ids) == 2  # per-call override
    assert encoder.encode_many(["a b c d", "e"]) == [encoder.vocab.encode(["a", "b", "c"]), encoder.vocab.encode(["e"])]


@pytest.mark.parametrize("truncation, kept", [
    ("head", ["a", "b", "c", "d"]),
    ("tail", ["g", "h", "i", "j"]),
    ("head+tail", ["a", "h", "i", "j"]),  # the first quarter and the last three quarters
])
def test_truncation_keeps_the_chosen_part_of_a_long_text(truncation, kept):
    config = TextConfig(tokenizer="whitespace", max_length=4, truncation=truncation)
    encoder = TextEncoder.fit(config, ["a b c d e f g h i j"])
    enc = encoder.encode("a b c d e f g h i j")
    assert enc.tokens == kept and enc.truncated == 6
    assert encoder.encode("a b").tokens == ["a", "b"]  # short texts are untouched
    # the choice travels with the saved encoder, so prediction keeps the same tokens
    saved = encoder.to_json()
    reloaded = TextEncoder(TextConfig(**saved["config"]), Vocabulary.from_json(saved))
    assert reloaded.encode("a b c d e f g h i j").tokens == kept


def test_unknown_truncation_is_a_clear_error():
    with pytest.raises(ValueError, match="'truncation' parameter must be one of head, tail, head\\+tail"):
        TextConfig(truncation="middle").validate()


def test_empty_text_gives_one_unk():
    encoder = TextEncoder.fit(TextConfig(), ["some text"])
    for text in ["", "   ", "<br />", "\n\t"]:
        enc = encoder.encode(text)
        assert enc.empty and enc.ids == [UNK_ID] and enc.truncated == 0


def test_encoder_to_json_holds_config_and_vocab():
    encoder = TextEncoder.fit(TextConfig(tokenizer="xx", max_length=7), ["x y"])
    data = encoder.to_json()
    assert data["config"]["tokenizer"] == "xx" and data["config"]["max_length"] == 7
    assert data["itos"] == encoder.vocab.itos


def test_extended_vocabulary_keeps_ids_and_appends_new_words():
    from core.text import Vocabulary
    vocab = Vocabulary(["<pad>", "<unk>", "good", "film"])
    bigger = vocab.extended(["film", "superb", "good", "dire", "superb"])
    assert bigger.itos == ["<pad>", "<unk>", "good", "film", "superb", "dire"]
    assert bigger.encode(["good", "film"]) == vocab.encode(["good", "film"])
    assert bigger.encode(["dire"]) == [5] and vocab.encode(["dire"]) == [1]
