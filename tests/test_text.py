import numpy as np
import pytest
import torch

from lbdt_cli.errors import InputError
from lbdt_cli.model import build_model
from lbdt_cli.model.text import GloveVectors, TextEmbedder, tokenize


def real(tokens):
    return tokens.real_tokens


def test_tokenizer_follows_the_released_rules_quirks_included():
    assert real(tokenize("The man in Brown jumping.")) == ["the", "man", "in", "brown", "jumping"]
    # separator runs other than one space survive as tokens
    assert real(tokenize("man, wearing")) == ["man", ", ", "wearing"]
    assert real(tokenize("a  dog")) == ["a", "  ", "dog"]
    assert real(tokenize("girl's hat")) == ["girl", "'", "s", "hat"]
    assert real(tokenize("a cat ..")) == ["a", "cat", " .."]
    assert real(tokenize("a cat..")) == ["a", "cat", ".."]
    t = tokenize("  ")
    assert t.tokens[0] == "" and t.mask[0] == 1 and sum(t.mask) == 1


def test_padding_and_truncation_to_25():
    t = tokenize("red circle")
    assert len(t.tokens) == len(t.mask) == 25 and t.mask == [1, 1] + [0] * 23 and not t.truncated
    long = tokenize(" ".join(f"w{i}" for i in range(20)))  # 20 words + 19 spaces dropped
    assert sum(long.mask) == 20
    longer = tokenize(" ".join(f"w{i}" for i in range(30)))
    assert longer.truncated and longer.num_tokens == 30 and sum(longer.mask) == 25
    assert longer.tokens[-1] == "w24"


def _write_glove(path, rows):
    path.write_text("\n".join(f"{w} " + " ".join(f"{x:.4f}" for x in v) for w, v in rows) + "\n", encoding="utf-8")


def test_glove_text_format_parsed_once_then_cached(tmp_path):
    rng = np.random.default_rng(0)
    rows = [("the", rng.normal(size=300)), ("man", rng.normal(size=300)), (". . .", rng.normal(size=300)),
            ("Man", rng.normal(size=300))]
    src = tmp_path / "glove.test.300d.txt"
    _write_glove(src, rows)
    cache = tmp_path / "cache"
    g = GloveVectors.from_file(src, cache_dir=cache)
    assert g.dim == 300 and len(list(cache.glob("*/vectors.npy"))) == 1
    vec = g.lookup(["the", "man", "unknownword", "", ". . ."])
    assert np.allclose(vec[0], rows[0][1], atol=1e-4) and np.allclose(vec[1], rows[1][1], atol=1e-4)
    assert not vec[2].any() and not vec[3].any()  # OOV and padding -> zero vectors
    assert np.allclose(vec[4], rows[2][1], atol=1e-4)  # a word containing spaces
    # the second load memory-maps the cached matrix instead of parsing the text again
    g2 = GloveVectors.from_file(src, cache_dir=cache)
    assert isinstance(g2.vectors, np.memmap)
    assert np.array_equal(np.asarray(g2.vectors), np.asarray(g.vectors))


def test_glove_errors(tmp_path):
    with pytest.raises(InputError, match="GloVe file not found"):
        GloveVectors.from_file(tmp_path / "nope.txt")
    bad = tmp_path / "bad.txt"
    bad.write_text("just some words\nmore words here\n")
    with pytest.raises(InputError, match="holds no vectors"):
        GloveVectors.from_file(bad, cache_dir=tmp_path)


def test_embedder_reports_unknown_words_and_needs_glove(tmp_path):
    model = build_model("tiny")
    emb = TextEmbedder.for_model(model)
    vectors, mask, reports = emb.embed(["the red circle", "the purple circle moving"])
    assert vectors.shape == (2, 25, 300) and mask.shape == (2, 25)
    assert reports[0].unknown_words == [] and reports[1].unknown_words == ["purple"]
    assert not vectors[1, 1].any()  # the unknown word embeds to zero
    # GloVe configs refuse to run without vectors
    with pytest.raises(InputError, match="--glove"):
        TextEmbedder.for_model(build_model("tiny", word_embedding="glove", vocabulary=None))
    src = tmp_path / "g.txt"
    _write_glove(src, [("the", np.ones(300)), ("man", np.full(300, 2.0))])
    emb = TextEmbedder.for_model(build_model("tiny", word_embedding="glove", vocabulary=None), src,
                                 cache_dir=tmp_path / "c")
    vectors, mask, reports = emb.embed(["The man, jumping."])
    assert reports[0].tokens == ["the", "man", ", ", "jumping"] and reports[0].unknown_words == ["jumping"]
    assert torch.all(vectors[0, 0] == 1) and torch.all(vectors[0, 1] == 2) and not vectors[0, 2:].any()
    assert mask[0].tolist() == [1] * 4 + [0] * 21
