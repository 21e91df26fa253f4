"""LBDT: two ResNet encoders (frame, frame difference) that exchange information through the
words of the sentence at stages 4 and 5, and a BCA decoder that fuses them."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lbdt_cli.model.configs import LBDTConfig
from lbdt_cli.model.decoder import Decoder
from lbdt_cli.model.encoders import ResNetEncoder
from lbdt_cli.model.text import LSTMTextEncoder
from lbdt_cli.model.transfer import LanguageBridgedTransfer


@dataclass
class TextFeatures:
    words: torch.Tensor  # [B, N, C] LSTM outputs
    sentence: torch.Tensor  # [B, C] sum of all N outputs (padding included, as released)
    padding: torch.Tensor  # [B, N] bool, True = padding

    def index(self, idx: torch.Tensor | list[int]) -> "TextFeatures":
        """Pick one expression per frame of a batch (idx: expression index per row)."""
        return TextFeatures(self.words[idx], self.sentence[idx], self.padding[idx])


class LBDT(nn.Module):
    def __init__(self, config: LBDTConfig):
        super().__init__()
        self.config = config
        self.provenance: dict = {}
        self.spatial_encoder = ResNetEncoder(config.backbone)
        self.temporal_encoder = ResNetEncoder(config.backbone)
        channels = self.spatial_encoder.channels
        if config.word_embedding == "learned":
            # Row 0 is padding and unknown words: a fixed zero vector, like GloVe's OOV.
            self.word_embedding = nn.Embedding(len(config.vocabulary) + 1, config.word_dim, padding_idx=0)
        else:
            self.word_embedding = None
        self.text_encoder = LSTMTextEncoder(config.word_dim, config.transfer_dim)
        self.transfer = nn.ModuleDict({
            "stage4": LanguageBridgedTransfer(channels[2], config.transfer_dim, config.transfer_layers,
                                              config.num_heads, config.dropout),
            "stage5": LanguageBridgedTransfer(channels[3], config.transfer_dim, config.transfer_layers,
                                              config.num_heads, config.dropout),
        })
        self.decoder = Decoder(channels, config.decoder_dim, config.transfer_dim, config.head_depth)

    def embed_words(self, token_ids: torch.Tensor) -> torch.Tensor:
        if self.word_embedding is None:
            raise RuntimeError(f"config {self.config.name!r} takes GloVe vectors, not token ids")
        return self.word_embedding(token_ids)

    def encode_text(self, word_vectors: torch.Tensor, word_mask: torch.Tensor) -> TextFeatures:
        words = self.text_encoder(word_vectors)
        return TextFeatures(words, words.sum(dim=1), ~word_mask.bool())

    def forward_with_text(self, image: torch.Tensor, frame_diff: torch.Tensor, text: TextFeatures,
                          return_attention: bool = False, expressions_per_frame: int = 1):
        """Mask logits [B·E,1,H,W] for frames whose expressions are already encoded.

        With E = `expressions_per_frame`, `image` and `frame_diff` hold B frames and `text` holds
        B·E rows, frame-major (frame i's expressions are rows i·E … i·E+E−1). Everything before
        the first transfer stage does not see the sentence, so it runs once per frame.
        """
        h, w = image.shape[-2:]
        if h % 32 or w % 32:
            raise ValueError(f"input height and width must be multiples of 32, got {h}x{w}")
        e = expressions_per_frame
        if text.words.shape[0] != image.shape[0] * e:
            raise ValueError(f"{image.shape[0]} frames x {e} expressions need {image.shape[0] * e} text rows, "
                             f"got {text.words.shape[0]}")
        enc_s, enc_t = self.spatial_encoder, self.temporal_encoder
        s2 = enc_s.layer1(enc_s.stem(image))
        t2 = enc_t.layer1(enc_t.stem(frame_diff))
        s3, t3 = enc_s.layer2(s2), enc_t.layer2(t2)
        s4, t4 = enc_s.layer3(s3), enc_t.layer3(t3)
        if e > 1:
            s4, t4 = s4.repeat_interleave(e, dim=0), t4.repeat_interleave(e, dim=0)
        s4, t4, attn4 = self.transfer["stage4"](s4, t4, text.words, text.padding, return_attention)
        s5, t5, attn5 = self.transfer["stage5"](enc_s.layer4(s4), enc_t.layer4(t4), text.words, text.padding,
                                                 return_attention)
        # The decoder repeats the shared stage-2/3 maps after refining them (refine is per sample).
        logits = self.decoder([s2, s3, s4, s5], [t2, t3, t4, t5], text.sentence)
        attention = {"stage4": attn4, "stage5": attn5} if return_attention else None
        return logits, attention

    def forward(self, image: torch.Tensor, frame_diff: torch.Tensor, word_vectors: torch.Tensor,
                word_mask: torch.Tensor) -> torch.Tensor:
        """image, frame_diff: normalised [B,3,H,W]; word_vectors [B,N,300]; word_mask [B,N].
        Returns mask logits [B,1,H,W]."""
        logits, _ = self.forward_with_text(image, frame_diff, self.encode_text(word_vectors, word_mask))
        return logits
