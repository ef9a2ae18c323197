"""Hierarchical LSTM for long documents: words -> sentence vectors -> document vector.

The encoder (``TextConfig.sentence_breaks``) ends every sentence with ``</s>`` (id 2), so the
model still takes the flat ``(ids, lengths)`` of ``LSTMClassifier`` and splits it by those marks:

    ids (B, T) -> sentences (N, L) -> word (Bi)LSTM stack + word pooling -> (N, D)
               -> per document (B, S, D) -> sentence BiLSTM -> attention over sentences -> heads

A document with no ``</s>`` (e.g. cut by ``max_length``) ends with a sentence of its remaining
tokens; a ``</s>`` belongs to the sentence it ends. ``embed(ids)`` returns the word vectors plus
one channel that is 1 at sentence ends (B, T, E + 1): ``forward_embedded`` reads the sentence
split from that channel, so FGM and Integrated Gradients, which perturb the embedding output,
keep the split (the channel gets no gradient, and any value above 0 marks an end).
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from core.models import AdditiveAttention, LSTMClassifier, ModelConfig
from core.text import SENT_END_ID


class HierarchicalClassifier(LSTMClassifier):
    """``LSTMClassifier``'s layers read single sentences; a sentence BiLSTM reads the document."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        out_dim = config.hidden_dim * (2 if config.bidirectional else 1)
        self.sentence_lstm = nn.LSTM(out_dim, config.hidden_dim, batch_first=True, bidirectional=True)
        self.sentence_attention = AdditiveAttention(2 * config.hidden_dim)
        self.heads = nn.ModuleList(nn.Linear(2 * config.hidden_dim, head.out_features) for head in self.heads)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        words = self.embedding(ids)  # (B, T, E)
        ends = (ids == SENT_END_ID).unsqueeze(-1).to(words.dtype)  # (B, T, 1)
        return torch.cat([words, ends], dim=-1)  # (B, T, E + 1)

    def forward_embedded(self, embedded: torch.Tensor, lengths: torch.Tensor,
                         ) -> tuple[list[torch.Tensor], torch.Tensor]:
        E = self.config.embedding_dim
        assert embedded.shape[-1] == E + 1, (
            f"HierarchicalClassifier.forward_embedded takes the output of .embed(ids) (last channel marks "
            f"sentence ends): expected {E + 1} channels, got {embedded.shape[-1]}")
        B, T, _ = embedded.shape
        device = embedded.device
        lengths = lengths.to(device)
        positions = torch.arange(T, device=device).unsqueeze(0)  # (1, T)
        valid = positions < lengths.unsqueeze(1)  # (B, T)
        ends = (embedded[..., E].detach() > 0) & valid  # (B, T)
        words = embedded[..., :E]

        # sentence number of every token; a </s> belongs to the sentence it closes
        sentence = torch.cumsum(ends.long(), dim=1) - ends.long()  # (B, T)
        starts_here = torch.ones_like(ends)
        starts_here[:, 1:] = ends[:, :-1]
        start = torch.where(starts_here, positions.expand(B, T), torch.zeros_like(sentence)).cummax(dim=1).values
        within = positions - start  # (B, T) position inside the sentence
        n_sentences = torch.where(valid, sentence, torch.zeros_like(sentence)).max(dim=1).values + 1  # (B,)
        S = int(n_sentences.max())
        L = int(torch.where(valid, within, torch.zeros_like(within)).max()) + 1

        # scatter tokens into a (B * S, L, E) grid of sentences, keep the real ones
        flat = (torch.arange(B, device=device).unsqueeze(1) * S + sentence)[valid]  # (n_tokens,)
        grid = words.new_zeros(B * S, L, E).index_put((flat, within[valid]), words[valid])
        sentence_lengths = torch.zeros(B * S, dtype=torch.long, device=device).index_add_(
            0, flat, torch.ones_like(flat))
        real = torch.nonzero(sentence_lengths > 0).squeeze(1)  # (N,)

        # word level: the LSTMClassifier stack and pooling, one sentence at a time
        states, last, _ = self.encode(grid[real], sentence_lengths[real])  # (N, L, D)
        word_mask = torch.arange(L, device=device).unsqueeze(0) < sentence_lengths[real].unsqueeze(1)
        sentence_vectors, word_weights = self.pool(states, last, word_mask)  # (N, D), (N, L) or None
        D = sentence_vectors.shape[-1]

        # sentence level: BiLSTM over each document's sentence vectors, attention over sentences
        docs = sentence_vectors.new_zeros(B * S, D).index_copy(0, real, sentence_vectors).view(B, S, D)
        packed = pack_padded_sequence(self.dropout(docs), n_sentences.cpu(), batch_first=True, enforce_sorted=False)
        doc_states, _ = pad_packed_sequence(self.sentence_lstm(packed)[0], batch_first=True, total_length=S)
        sentence_mask = torch.arange(S, device=device).unsqueeze(0) < n_sentences.unsqueeze(1)  # (B, S)
        pooled, sentence_weights = self.sentence_attention(doc_states, sentence_mask)  # (B, 2H), (B, S)
        logits = [head(self.dropout(pooled)) for head in self.heads]

        # token weights (B, T): sentence weight x word weight (uniform inside a sentence without
        # word attention); they sum to 1 over each document's tokens
        if word_weights is None:
            word_weights = word_mask.to(sentence_weights.dtype) / sentence_lengths[real].unsqueeze(1)
        per_word = sentence_weights.new_zeros(B * S, L).index_copy(0, real, word_weights.to(sentence_weights.dtype))
        token_weights = per_word[flat, within[valid]] * sentence_weights.reshape(-1)[flat]
        weights = sentence_weights.new_zeros(B, T).index_put((valid.nonzero(as_tuple=True)), token_weights)
        return logits, weights
