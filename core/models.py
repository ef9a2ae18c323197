"""The LSTM classifier: embedding -> stacked (Bi)LSTM -> pooling -> one head per task.

No loss, no optimiser, no I/O here. A saved run holds ``ModelConfig`` as JSON plus the weights,
which is everything needed to rebuild the model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import torch
import torch.nn as nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

POOLINGS = ("last", "mean", "max", "attention")
MAX_NGRAM = 3
NGRAM_PRIME = 1_000_003  # legacy n-gram hash (ngram_hash 1): h = (h * prime + id + n) mod buckets
# n-gram hash 2: h = (h * A + id * B + n) mod buckets. The legacy prime is 3 modulo the default
# 10**6 buckets, so its bigrams of a 25,000-word vocabulary fell into 100,000 rows; these
# multipliers are far from every power of ten. int64 never overflows for buckets <= MAX_NGRAM_BUCKETS
# and vocabularies under 10**9.
NGRAM_MULTIPLIERS = (2_654_435_761, 2_246_822_519)
MAX_NGRAM_BUCKETS = 100_000_000


@dataclass
class ModelConfig:
    vocab_size: int = 2  # set from the vocabulary
    embedding_dim: int = 100  # follows the pretrained vectors when they are used
    hidden_dim: int = 128  # per direction
    num_layers: int = 1
    bidirectional: bool = True
    dropout: float = 0.5  # on embeddings, between LSTM layers and before the heads
    pooling: str = "attention"  # last | mean | max | attention (attention also explains itself)
    packed: bool = True  # pack_padded_sequence: the LSTM never reads padding
    # training batches with a smaller padding share skip packing (several times faster on CPU; the
    # few pads they hold are read as blank tokens); 0 packs every batch
    pack_min_padding: float = 0.05
    layer_norm: bool = False  # LayerNorm after each LSTM layer
    residual: bool = False  # add each LSTM layer's input to its output (from layer 2 on)
    # > 0: read the text in segments of this many tokens, carrying the forward LSTM state from one
    # segment to the next (detached: truncated BPTT); the backward direction reads each segment on
    # its own. Texts are then read whole: the encoder no longer cuts them at max_length.
    chunk_length: int = 0
    # word-level BiLSTM per sentence -> sentence-level BiLSTM -> attention over sentences; the
    # encoder marks sentence ends with "</s>" (spaCy sentencizer), see core/hierarchical.py
    hierarchical: bool = False
    # > 0: a linear bag-of-n-grams model beside the LSTM ("wide and deep"), its scores added to the
    # logits: 1 = words, 2 = words + bigrams, 3 = + trigrams (n-grams hashed into ngram_buckets rows)
    ngrams: int = 0
    ngram_buckets: int = 1_000_000
    ngram_hash: int = 2  # how n-grams find their row: 2 (current); 1 reads runs saved before it
    num_classes: list[int] = field(default_factory=lambda: [2])  # one entry per task
    padding_idx: int = 0

    def validate(self) -> "ModelConfig":
        for name in ("vocab_size", "embedding_dim", "hidden_dim", "num_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"The '{name}' parameter must be an int >= 1. Got {value!r} instead.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"The 'dropout' parameter must be a float in [0, 1). Got {self.dropout!r} instead.")
        if self.pooling not in POOLINGS:
            raise ValueError(f"The 'pooling' parameter must be one of {', '.join(POOLINGS)}. "
                             f"Got {self.pooling!r} instead.")
        if not isinstance(self.chunk_length, int) or isinstance(self.chunk_length, bool) or self.chunk_length < 0:
            raise ValueError(f"The 'chunk_length' parameter must be an int >= 0 (0 = off). "
                             f"Got {self.chunk_length!r} instead.")
        if self.hierarchical and self.chunk_length:
            raise ValueError("The 'hierarchical' and 'chunk_length' parameters cannot be combined: the "
                             "hierarchical model already reads long texts one sentence at a time.")
        if not isinstance(self.ngrams, int) or isinstance(self.ngrams, bool) or not 0 <= self.ngrams <= MAX_NGRAM:
            raise ValueError(f"The 'ngrams' parameter must be an int from 0 (off) to {MAX_NGRAM}. "
                             f"Got {self.ngrams!r} instead.")
        if self.ngrams >= 2 and (not isinstance(self.ngram_buckets, int) or isinstance(self.ngram_buckets, bool)
                                 or not 1 <= self.ngram_buckets <= MAX_NGRAM_BUCKETS):
            raise ValueError(f"The 'ngram_buckets' parameter must be an int from 1 to {MAX_NGRAM_BUCKETS:,}. "
                             f"Got {self.ngram_buckets!r} instead.")
        if self.ngram_hash not in (1, 2):
            raise ValueError(f"The 'ngram_hash' parameter must be 1 or 2. Got {self.ngram_hash!r} instead.")
        if self.ngrams and self.hierarchical:
            raise ValueError("The 'ngrams' and 'hierarchical' parameters cannot be combined yet: train the "
                             "hierarchical model without --ngrams, or a flat model with it.")
        if not self.num_classes or any(n < 2 for n in self.num_classes):
            raise ValueError(f"Each task needs at least 2 classes. Got {self.num_classes!r}.")
        return self

    @property
    def ngram_width(self) -> int:
        """Logits the n-gram model adds to: one per head output, all tasks side by side."""
        return sum(head_size(n) for n in self.num_classes) if self.ngrams else 0

    @property
    def embedded_width(self) -> int:
        """Channels of ``embed(ids)``: word vectors, then the sentence-end mark (hierarchical) or
        the n-gram scores per token."""
        return self.embedding_dim + (1 if self.hierarchical else 0) + self.ngram_width

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if values.get("ngrams") and "ngram_hash" not in values:
            values["ngram_hash"] = 1  # saved before the hash changed: its weights follow the old rows
        return cls(**values)

    def to_dict(self) -> dict:
        return asdict(self)


def head_size(num_classes: int) -> int:
    """Two classes share one logit (sigmoid); more classes get one logit each (softmax)."""
    return 1 if num_classes == 2 else num_classes


def logits_to_probs(logits: torch.Tensor) -> torch.Tensor:
    """(B, 1) binary logits or (B, C) logits -> (B, C) class probabilities."""
    if logits.shape[-1] == 1:
        positive = torch.sigmoid(logits.float())
        return torch.cat([1 - positive, positive], dim=-1)
    return torch.softmax(logits.float(), dim=-1)


class AdditiveAttention(nn.Module):
    """score_t = v . tanh(W h_t); weights = softmax over real (non-pad) positions."""

    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Linear(dim, dim)
        self.score = nn.Linear(dim, 1, bias=False)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.score(torch.tanh(self.proj(states))).squeeze(-1)  # (B, T)
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        weights = torch.softmax(scores.float(), dim=-1).to(states.dtype)  # (B, T)
        return torch.bmm(weights.unsqueeze(1), states).squeeze(1), weights  # (B, H), (B, T)


def _map_packed(fn, x):
    """Apply an elementwise-in-time function to a PackedSequence's data or to a tensor."""
    if isinstance(x, PackedSequence):
        return x._replace(data=fn(x.data))
    return fn(x)


class NgramScores(nn.Module):
    """The linear part of a "wide and deep" classifier: each token's score per logit is the weight
    of its word plus the weights of the hashed n-grams that end at it (B, T) -> (B, T, W).

    Word ids index the first ``vocab_size`` rows; n-grams of 2..order tokens share ``buckets`` rows
    after them. The table starts at zero, so an untrained model is the LSTM alone.

    ``active`` False leaves the logits to the LSTM alone: training with ``ngram_fit="separate"``
    trains the LSTM that way, then fits this table as a logistic regression (core/wide.py)."""

    def __init__(self, vocab_size: int, order: int, buckets: int, width: int, padding_idx: int = 0,
                 hash_version: int = 2):
        super().__init__()
        self.vocab_size, self.order, self.buckets, self.hash_version = vocab_size, order, buckets, hash_version
        self.active = True
        rows = vocab_size + (buckets if order >= 2 else 0)
        self.table = nn.Embedding(rows, width, padding_idx=padding_idx)
        nn.init.zeros_(self.table.weight)

    def rows(self, ids: torch.Tensor) -> list[torch.Tensor]:
        """Table rows per token (B, T) for each order 1..order: the word, then the n-gram ending there."""
        out = [ids]
        previous = hashed = ids
        for n in range(2, self.order + 1):
            # the token n-1 places back; <pad> (0) before the start of the text
            previous = torch.cat([torch.zeros_like(ids[:, :1]), previous[:, :-1]], dim=1)
            if self.hash_version == 1:
                hashed = (hashed * NGRAM_PRIME + previous + n) % self.buckets
            else:
                a, b = NGRAM_MULTIPLIERS
                hashed = (hashed * a + previous * b + n) % self.buckets
            out.append(hashed + self.vocab_size)
        return out

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        scores = None
        for rows in self.rows(ids):
            scores = self.table(rows) if scores is None else scores + self.table(rows)  # (B, T, W)
        # padding scores nothing, so a text of <pad> (the explanations' baseline) scores exactly 0
        return scores * (ids != self.table.padding_idx).unsqueeze(-1).to(scores.dtype)


class LSTMClassifier(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_dim, padding_idx=config.padding_idx)
        self.dropout = nn.Dropout(config.dropout)
        directions = 2 if config.bidirectional else 1
        out_dim = config.hidden_dim * directions
        self.lstms = nn.ModuleList(
            nn.LSTM(config.embedding_dim if i == 0 else out_dim, config.hidden_dim, batch_first=True,
                    bidirectional=config.bidirectional)
            for i in range(config.num_layers))
        self.norms = nn.ModuleList(nn.LayerNorm(out_dim) for _ in range(config.num_layers)) \
            if config.layer_norm else None
        self.attention = AdditiveAttention(out_dim) if config.pooling == "attention" else None
        self.heads = nn.ModuleList(nn.Linear(out_dim, head_size(n)) for n in config.num_classes)
        self.ngrams = NgramScores(config.vocab_size, config.ngrams, config.ngram_buckets, config.ngram_width,
                                  config.padding_idx, config.ngram_hash) if config.ngrams else None

    def set_dropout(self, p: float) -> None:
        """Change the dropout rate in place (used by the dropout schedule)."""
        self.dropout.p = p

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        words = self.embedding(ids)  # (B, T, E)
        if self.ngrams is None:
            return words
        return torch.cat([words, self.ngrams(ids).to(words.dtype)], dim=-1)  # (B, T, E + W)

    def add_ngram_logits(self, logits: list[torch.Tensor], embedded: torch.Tensor, mask: torch.Tensor,
                         lengths: torch.Tensor) -> list[torch.Tensor]:
        """Add the n-gram model's document scores to each head's logits: the per-token scores
        (channels after the word vectors) summed over real tokens and divided by sqrt(length), as
        an L2-normalised bag of n-grams would weigh them."""
        if self.ngrams is None or not self.ngrams.active:
            return logits
        scores = self.dropout(embedded[..., self.config.embedding_dim:])  # (B, T, W); drops whole tokens when W = 1
        scores = scores * mask.unsqueeze(-1).to(scores.dtype)
        document = scores.sum(1) / lengths.to(scores.device).clamp(min=1).to(scores.dtype).sqrt().unsqueeze(-1)
        out, start = [], 0
        for head_logits in logits:
            width = head_logits.shape[-1]
            out.append(head_logits + document[:, start:start + width].to(head_logits.dtype))
            start += width
        return out

    def encode(self, embedded: torch.Tensor, lengths: torch.Tensor,
               state=None) -> tuple[torch.Tensor, torch.Tensor, list]:
        """Run the LSTM stack. Returns states (B, T, H*dirs), last (B, H*dirs), final (h, c) per layer."""
        chunk = self.config.chunk_length
        if chunk and embedded.shape[1] > chunk and state is None:
            return self._encode_chunked(embedded, lengths, chunk)
        return self._encode(embedded, lengths, state, self.config.packed and self._pack_helps(lengths, embedded.shape[1]))

    def _pack_helps(self, lengths: torch.Tensor, T: int) -> bool:
        """Packing is exact but slow on CPU; a training batch with little padding (length-bucketed)
        runs unpacked through the fused LSTM kernel instead. Evaluation always packs."""
        if not self.training or self.config.pack_min_padding <= 0:
            return True
        padding = 1.0 - float(lengths.sum()) / (len(lengths) * T) if T else 0.0
        return padding >= self.config.pack_min_padding

    def _encode_chunked(self, embedded: torch.Tensor, lengths: torch.Tensor,
                        chunk: int) -> tuple[torch.Tensor, torch.Tensor, list]:
        """Truncated BPTT: segments of ``chunk`` tokens; the forward state is carried (detached)
        from one segment to the next, the backward direction starts afresh in every segment."""
        B, T, _ = embedded.shape
        H, dirs = self.config.hidden_dim, 2 if self.config.bidirectional else 1
        lengths = lengths.cpu()
        zeros = embedded.new_zeros(B, H)
        carried = [(zeros, zeros) for _ in self.lstms]  # forward (h, c) per layer, (B, H) each
        forward_last, backward_first = zeros, zeros
        pieces = []
        for start in range(0, T, chunk):
            width = min(chunk, T - start)
            piece_lengths = (lengths - start).clamp(0, width)
            active = torch.nonzero(piece_lengths > 0).squeeze(1).to(embedded.device)
            if len(active) == 0:  # only padding from here on
                pieces.append(embedded.new_zeros(B, T - start, H * dirs))
                break
            state = []
            for h, c in carried:
                h0, c0 = h[active].unsqueeze(0), c[active].unsqueeze(0)  # (1, b, H)
                if dirs == 2:
                    h0, c0 = torch.cat([h0, torch.zeros_like(h0)]), torch.cat([c0, torch.zeros_like(c0)])
                state.append((h0.contiguous(), c0.contiguous()))
            states, _, piece_finals = self._encode(embedded[active, start:start + width],
                                                   piece_lengths[active.cpu()], state, packed=True)
            dtype = embedded.dtype  # autocast may hand back lower-precision states
            pieces.append(embedded.new_zeros(B, width, H * dirs).index_copy(0, active, states.to(dtype)))
            carried = [(h_.index_copy(0, active, fh[0].detach().to(dtype)),
                        c_.index_copy(0, active, fc[0].detach().to(dtype)))
                       for (h_, c_), (fh, fc) in zip(carried, piece_finals)]
            forward_last = forward_last.index_copy(0, active, piece_finals[-1][0][0].to(dtype))
            if start == 0 and dirs == 2:
                backward_first = piece_finals[-1][0][1].to(dtype)  # the backward direction ends at token 0
        states = torch.cat(pieces, dim=1)[:, :T]
        last = torch.cat([forward_last, backward_first], dim=-1) if dirs == 2 else forward_last
        finals = [(h.unsqueeze(0), c.unsqueeze(0)) for h, c in carried]  # forward direction only
        return states, last, finals

    def _encode(self, embedded: torch.Tensor, lengths: torch.Tensor, state,
                packed: bool) -> tuple[torch.Tensor, torch.Tensor, list]:
        B, T, _ = embedded.shape
        x = self.dropout(embedded)
        if packed:
            x = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        finals = []
        for i, lstm in enumerate(self.lstms):
            layer_in = x
            x, (h, c) = lstm(x, None if state is None else state[i])
            finals.append((h, c))
            if i < len(self.lstms) - 1:
                x = _map_packed(self.dropout, x)
            if self.norms is not None:
                x = _map_packed(self.norms[i], x)
            if self.config.residual and i > 0:
                x = x._replace(data=x.data + layer_in.data) if packed else x + layer_in
        if packed:
            x, _ = pad_packed_sequence(x, batch_first=True, total_length=T)
        h = finals[-1][0]  # (dirs, B, H)
        if self.config.bidirectional:
            # forward direction ends at the last real token; the backward one at the first
            last = torch.cat([h[0], h[1]], dim=-1) if packed else torch.cat(
                [x[torch.arange(B), lengths.to(x.device) - 1, :self.config.hidden_dim],
                 x[:, 0, self.config.hidden_dim:]], dim=-1)
        else:
            last = h[0] if packed else x[torch.arange(B), lengths.to(x.device) - 1]
        return x, last, finals

    def pool(self, states: torch.Tensor, last: torch.Tensor,
             mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        pooling = self.config.pooling
        if pooling == "last":
            return last, None
        if pooling == "mean":
            m = mask.unsqueeze(-1).to(states.dtype)
            return (states * m).sum(1) / m.sum(1).clamp(min=1), None
        if pooling == "max":
            return states.masked_fill(~mask.unsqueeze(-1), torch.finfo(states.dtype).min).max(1).values, None
        return self.attention(states, mask)

    def forward_embedded(self, embedded: torch.Tensor, lengths: torch.Tensor,
                         ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        T = embedded.shape[1]
        mask = torch.arange(T, device=embedded.device).unsqueeze(0) < lengths.to(embedded.device).unsqueeze(1)
        states, last, _ = self.encode(embedded[..., :self.config.embedding_dim], lengths)
        pooled, weights = self.pool(states, last, mask)
        pooled = self.dropout(pooled)
        return self.add_ngram_logits([head(pooled) for head in self.heads], embedded, mask, lengths), weights

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """ids (B, T), lengths (B,) -> ([logits (B, 1 or C) per task], attention weights (B, T) or None)."""
        assert ids.dim() == 2, f"ids must be (batch, time), got shape {tuple(ids.shape)}"
        return self.forward_embedded(self.embed(ids), lengths)


def probs_to_logits(probs: torch.Tensor, width: int) -> torch.Tensor:
    """(B, C) probabilities -> logits that ``logits_to_probs`` maps back to them: log p for C
    outputs, the log-odds of the second class for one output (``width == 1``)."""
    probs = probs.float().clamp(1e-7, 1 - 1e-7)
    if width == 1:
        return (torch.log(probs[:, 1]) - torch.log(probs[:, 0])).unsqueeze(-1)  # (B, 1)
    return torch.log(probs)  # (B, C)


@dataclass
class EnsembleConfig:
    """Several trained classifiers that read the same tokens (one vocabulary) and share labels.

    Each member keeps its own architecture; the ensemble averages their class probabilities."""
    members: list[ModelConfig]

    def validate(self) -> "EnsembleConfig":
        if len(self.members) < 2:
            raise ValueError(f"An ensemble needs at least 2 members. Got {len(self.members)}.")
        for member in self.members:
            member.validate()
        for name in ("vocab_size", "num_classes", "padding_idx"):
            values = [getattr(m, name) for m in self.members]
            if any(v != values[0] for v in values):
                raise ValueError(f"Ensemble members must share '{name}'. Got {values}.")
        return self

    # what the rest of the product reads off a model config
    vocab_size = property(lambda self: self.members[0].vocab_size)
    num_classes = property(lambda self: self.members[0].num_classes)
    padding_idx = property(lambda self: self.members[0].padding_idx)
    embedding_dim = property(lambda self: sum(m.embedding_dim for m in self.members))
    hierarchical = property(lambda self: any(m.hierarchical for m in self.members))
    chunk_length = property(lambda self: max(m.chunk_length for m in self.members))

    @property
    def pooling(self) -> str:
        poolings = sorted({m.pooling for m in self.members})
        return poolings[0] if len(poolings) == 1 else "mixed (" + ", ".join(poolings) + ")"

    def describe(self) -> str:
        return f"ensemble of {len(self.members)}: " + "; ".join(
            f"{m.num_layers} x {'Bi' if m.bidirectional else ''}LSTM {m.hidden_dim}, {m.pooling}"
            + (f" + {m.ngrams}-grams" if m.ngrams else "") for m in self.members)

    def to_dict(self) -> dict:
        return {"ensemble": [m.to_dict() for m in self.members], "vocab_size": self.vocab_size,
                "num_classes": list(self.num_classes), "embedding_dim": self.embedding_dim, "pooling": self.pooling}

    @classmethod
    def from_dict(cls, data: dict) -> "EnsembleConfig":
        members = data.get("ensemble")
        if not isinstance(members, list) or not all(isinstance(m, dict) for m in members):
            raise ValueError("An ensemble config must list its members' model configs under 'ensemble'.")
        return cls([ModelConfig.from_dict(m) for m in members])


def model_config_from_dict(data: dict) -> "ModelConfig | EnsembleConfig":
    """The ``model`` section of config.json: one classifier, or an ensemble (key ``ensemble``)."""
    if not isinstance(data, dict):
        raise ValueError("The model config must be a JSON object.")
    return EnsembleConfig.from_dict(data) if "ensemble" in data else ModelConfig.from_dict(data)


class MemberEmbeddings(nn.Module):
    """The ensemble's embedding layer: every member's embedding of the same ids, side by side.

    It owns no weights (they stay in each member), so Captum can attribute to one layer while each
    member reads its own slice. The owner is held outside the module tree to avoid a cycle."""

    def __init__(self, owner: "EnsembleClassifier"):
        super().__init__()
        object.__setattr__(self, "_owner", owner)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.cat([m.embed(ids) for m in self._owner.members], dim=-1)  # (B, T, sum of widths)


class EnsembleClassifier(nn.Module):
    """Averages the class probabilities of several classifiers; same inputs and outputs as one.

    The logits it returns are ``probs_to_logits`` of the averaged probabilities, so everything
    that turns logits into probabilities (prediction, metrics, explanations) reads the average. The
    attention weights are the members' mean when every member pools with attention."""

    def __init__(self, config: EnsembleConfig):
        super().__init__()
        self.config = config.validate()
        self.members = nn.ModuleList(build_model(c) for c in config.members)
        self.embedding = MemberEmbeddings(self)
        # a hierarchical member's embed() adds one channel that marks sentence ends, an n-gram
        # member its per-token n-gram scores
        widths = [c.embedded_width for c in config.members]
        ends = torch.tensor(widths).cumsum(0).tolist()
        self.slices = list(zip([0] + ends[:-1], ends))

    @property
    def heads(self) -> nn.ModuleList:
        return self.members[0].heads  # one head per task, as in every member

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embedding(ids)

    def combine(self, outputs: list[tuple[list[torch.Tensor], torch.Tensor | None]]
                ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        tasks = []
        for k, head in enumerate(self.heads):
            mean = torch.stack([logits_to_probs(logits[k]) for logits, _ in outputs]).mean(0)  # (B, C)
            tasks.append(probs_to_logits(mean, head.out_features))
        weights = [w for _, w in outputs]
        attention = torch.stack(weights).mean(0) if all(w is not None for w in weights) else None
        return tasks, attention

    def forward_embedded(self, embedded: torch.Tensor, lengths: torch.Tensor,
                         ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        return self.combine([member.forward_embedded(embedded[..., start:end], lengths)
                             for member, (start, end) in zip(self.members, self.slices)])

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """ids (B, T), lengths (B,) -> ([logits (B, 1 or C) per task], mean attention (B, T) or None)."""
        assert ids.dim() == 2, f"ids must be (batch, time), got shape {tuple(ids.shape)}"
        return self.forward_embedded(self.embed(ids), lengths)


def build_model(config: "ModelConfig | EnsembleConfig") -> nn.Module:
    if isinstance(config, EnsembleConfig):
        return EnsembleClassifier(config)
    if config.hierarchical:
        from core.hierarchical import HierarchicalClassifier
        return HierarchicalClassifier(config)
    return LSTMClassifier(config)
