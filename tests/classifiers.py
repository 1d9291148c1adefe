"""Real classifiers for the tests, built on the CPU in seconds: a generated labelled set that a tiny
model learns in a few steps, a Qwen2-shaped decoder classifier trained on it (with the bundled
SmolLM2 tokenizer), and a DistilBERT-shaped encoder classifier with a WordPiece tokenizer trained on
the same texts (random weights)."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import torch
import transformers

# Each label's texts hold two of its words among filler words: learnable from the words alone.
WORDS = {
    "music": ["guitar", "piano", "song", "melody", "drums", "violin", "concert", "chorus", "album", "singer"],
    "sport": ["football", "tennis", "match", "goal", "runner", "swim", "score", "team", "coach", "race"],
    "weather": ["rain", "snow", "sunny", "cloudy", "storm", "wind", "fog", "thunder", "cold", "forecast"],
}
LABELS = sorted(WORDS)
FILLER = [
    "i",
    "think",
    "the",
    "today",
    "was",
    "really",
    "about",
    "some",
    "very",
    "and",
    "we",
    "saw",
    "a",
    "lot",
    "of",
    "it",
    "is",
    "my",
    "friend",
    "said",
]


def examples(count: int, seed: int) -> list[tuple[str, str]]:
    """``count`` (text, label) pairs, the labels in turn, shuffled with ``seed``."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        label = LABELS[i % len(LABELS)]
        words = rng.choices(FILLER, k=rng.randint(4, 8))
        for word in rng.sample(WORDS[label], 2):
            words.insert(rng.randint(0, len(words)), word)
        out.append((" ".join(words), label))
    rng.shuffle(out)
    return out


def write_csv(path: Path, rows: list[tuple[str, str]], columns: tuple[str, str] = ("text", "label")) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows(rows)
    return path


def _label_config(**values) -> dict:
    return {
        "num_labels": len(LABELS),
        "id2label": dict(enumerate(LABELS)),
        "label2id": {label: i for i, label in enumerate(LABELS)},
        **values,
    }


def train_decoder_classifier(folder: Path, tokenizer_dir: Path, steps: int = 30) -> Path:
    """A 2-layer Qwen2 classifier trained for ``steps`` AdamW steps on :func:`examples`, saved with
    the tokenizer of ``tokenizer_dir`` as a Hugging Face directory."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
    config = transformers.Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        architectures=["Qwen2ForSequenceClassification"],
        **_label_config(),
    )
    torch.manual_seed(0)
    model = transformers.AutoModelForSequenceClassification.from_config(config)
    train = examples(240, seed=0)
    batch = tokenizer([t for t, _ in train], padding=True, padding_side="right", return_tensors="pt")
    labels = torch.tensor([LABELS.index(label) for _, label in train])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        rows = torch.randint(0, len(train), (32,), generator=generator)
        loss = model(
            input_ids=batch.input_ids[rows], attention_mask=batch.attention_mask[rows], labels=labels[rows]
        ).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def wordpiece_tokenizer(texts: list[str]) -> transformers.PreTrainedTokenizerFast:
    """A lower-casing BERT-style WordPiece tokenizer trained on ``texts`` ([CLS] text [SEP])."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=300, special_tokens=specials))
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def encoder_classifier(folder: Path, id2label: dict[int, str]) -> Path:
    """A 2-layer DistilBERT classifier (random weights) with labels ``id2label`` and a WordPiece
    tokenizer of :func:`examples`' texts, saved as a Hugging Face directory."""
    tokenizer = wordpiece_tokenizer([t for t, _ in examples(240, seed=0)])
    config = transformers.DistilBertConfig(
        vocab_size=len(tokenizer),
        dim=32,
        n_layers=2,
        n_heads=2,
        hidden_dim=64,
        max_position_embeddings=128,
        num_labels=len(id2label),
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
        pad_token_id=tokenizer.pad_token_id,
        architectures=["DistilBertForSequenceClassification"],
    )
    torch.manual_seed(0)
    transformers.AutoModelForSequenceClassification.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
