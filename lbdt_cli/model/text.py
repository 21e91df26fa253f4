"""The text side: the authors' tokenizer, GloVe lookups (parsing and cache in `lbdt_cli.glove`),
learned embeddings for small configs, and the LSTM word encoder."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from lbdt_cli.errors import InputError
from lbdt_cli.glove import GloveVectors, Progress

MAX_WORDS = 25
PAD_TOKEN = ""
_SPLIT = re.compile(r"(\W+)")
_WORDLIKE = re.compile(r"\w")


@dataclass
class Tokens:
    tokens: list[str]  # exactly max_words entries, padded with PAD_TOKEN
    mask: list[int]  # 1 for real tokens, 0 for padding
    truncated: bool = False
    num_tokens: int = 0  # before truncation

    @property
    def real_tokens(self) -> list[str]:
        return [t for t, m in zip(self.tokens, self.mask) if m]


def tokenize(sentence: str, max_words: int = MAX_WORDS) -> Tokens:
    """Tokenise like the released LBDT code, quirks included.

    `re.split` with a capturing group keeps separator runs (", ", "'", "  ") as tokens; they
    are out of vocabulary, so they get zero vectors while still counting as real words.
    """
    parts = _SPLIT.split(sentence.strip())
    tokens = [p.lower() for p in parts if p not in ("", " ")]
    if not tokens:
        tokens = [PAD_TOKEN]
    if tokens[-1] == "." and len(tokens) > 1:
        # The authors drop a trailing ".". We keep a lone "." so that at least one word is
        # unmasked: an all-padding sentence would make every attention row NaN.
        tokens = tokens[:-1]
    num = len(tokens)
    tokens = tokens[:max_words]
    mask = [1] * len(tokens) + [0] * (max_words - len(tokens))
    tokens = tokens + [PAD_TOKEN] * (max_words - len(tokens))
    return Tokens(tokens, mask, truncated=num > max_words, num_tokens=num)


def is_wordlike(token: str) -> bool:
    return bool(_WORDLIKE.search(token))


@dataclass
class SentenceReport:
    sentence: str
    tokens: list[str]
    unknown_words: list[str] = field(default_factory=list)
    truncated: bool = False
    num_tokens: int = 0


class TextEmbedder:
    """Turns sentences into the model's word inputs ([E, N, 300] vectors and an [E, N] mask)."""

    def __init__(self, model: nn.Module, glove: GloveVectors | None = None):
        self.model = model
        self.config = model.config
        self.glove = glove
        if self.config.word_embedding == "glove":
            if glove is None:
                raise InputError(f"model {self.config.name!r} uses GloVe word vectors: pass --glove PATH "
                                 "(e.g. glove.840B.300d.txt)")
            if glove.dim != self.config.word_dim:
                raise InputError(f"GloVe file has {glove.dim}-d vectors but the model expects {self.config.word_dim}-d")
        else:
            self.stoi = {w: i + 1 for i, w in enumerate(self.config.vocabulary or ())}

    @classmethod
    def for_model(cls, model: nn.Module, glove_path: str | os.PathLike | None = None,
                  cache_dir: str | os.PathLike | None = None, progress: Progress | None = None) -> "TextEmbedder":
        glove = None
        if model.config.word_embedding == "glove" and glove_path is not None:
            glove = GloveVectors.from_file(glove_path, cache_dir, progress)
        return cls(model, glove)

    def _tokenize(self, sentences: list[str], vocabulary) -> tuple[list[Tokens], torch.Tensor, list[SentenceReport]]:
        """Tokens, mask [E, N] and reports; `vocabulary` answers `word in vocabulary`."""
        toks, reports = [], []
        for s in sentences:
            tok = tokenize(s, self.config.max_words)
            unknown = [t for t in tok.real_tokens if is_wordlike(t) and t not in vocabulary]
            toks.append(tok)
            reports.append(SentenceReport(s, tok.real_tokens, unknown, tok.truncated, tok.num_tokens))
        return toks, torch.tensor([t.mask for t in toks], dtype=torch.float32), reports

    def token_ids(self, sentences: list[str]) -> tuple[torch.Tensor, torch.Tensor, list[SentenceReport]]:
        """Learned-embedding configs: ids [E, N] (0 = padding or unknown) and mask [E, N]."""
        toks, mask, reports = self._tokenize(sentences, self.stoi)
        ids = [[self.stoi.get(t, 0) if m else 0 for t, m in zip(tok.tokens, tok.mask)] for tok in toks]
        return torch.tensor(ids, dtype=torch.long), mask, reports

    def embed(self, sentences: list[str]) -> tuple[torch.Tensor, torch.Tensor, list[SentenceReport]]:
        if self.config.word_embedding != "glove":
            ids, mask, reports = self.token_ids(sentences)
            with torch.no_grad():
                param = next(self.model.parameters())
                vectors = self.model.embed_words(ids.to(param.device)).float().cpu()
            return vectors, mask, reports
        toks, mask, reports = self._tokenize(sentences, self.glove)
        return torch.from_numpy(np.stack([self.glove.lookup(t.tokens) for t in toks])), mask, reports


class LSTMTextEncoder(nn.Module):
    """One LSTM layer over all N word slots, padding included (as the checkpoints were trained)."""

    def __init__(self, word_dim: int = 300, hidden_dim: int = 512):
        super().__init__()
        self.lstm = nn.LSTM(word_dim, hidden_dim, num_layers=1, batch_first=True)

    def forward(self, word_vectors: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(word_vectors)
        return out
