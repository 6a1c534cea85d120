"""Tiny random models of the architectures that are not decoder-only LMs, saved with the project's
own tiny tokenizer (pad 0, bos 1, eos 2): encoder-only classifiers (RoBERTa, DeBERTa-v2, BERT) with
two labels (`nothate`, `hate`, as the hate-speech classifiers used as rewards in the wild) and
encoder-decoder LMs (T5, BART) as policies and reward models. The encoder-decoders are built without
dropout (the checkpoints default to 0.1), so that runs on one and on two processes, which draw
different random streams, compute the same."""

from __future__ import annotations

from pathlib import Path

import torch

LABELS = {0: "nothate", 1: "hate"}
SIZE = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
ENCODERS = {
    "roberta": ("roberta", {**SIZE, "max_position_embeddings": 130}),
    "deberta-v2": ("deberta-v2", {**SIZE, "max_position_embeddings": 128, "pooler_hidden_size": 32}),
    "bert": ("bert", {**SIZE, "max_position_embeddings": 128}),
}
SEQ2SEQ = {
    # T5 v1.1 layout (gated GELU, untied head) as FLAN-T5; the decoder starts from the pad token; a
    # small initializer (the untied head starts at std 1 otherwise: loss about 20 nats, one token sampled).
    "t5": ("t5", {"d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 2, "num_heads": 4,
                  "feed_forward_proj": "gated-gelu", "tie_word_embeddings": False,
                  "decoder_start_token_id": 0, "initializer_factor": 0.05, "dropout_rate": 0.0}),
    # BART: learned absolute positions, a bias on the logits; the decoder starts from EOS; a larger
    # initializer than its 0.02 (at 0.02 the 32-wide model did not learn to copy in 300 steps; at 0.1 it does).
    "bart": ("bart", {"d_model": 32, "encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 4,
                      "decoder_attention_heads": 4, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64,
                      "max_position_embeddings": 256, "decoder_start_token_id": 2, "forced_eos_token_id": None,
                      "dropout": 0.0, "init_std": 0.1}),
}  # fmt: skip


def _config(model_type: str, size: dict, **more):
    from transformers import AutoConfig

    from rlhf.models.tiny import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    ids = {"pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
           "eos_token_id": tokenizer.eos_token_id}  # fmt: skip
    return AutoConfig.for_model(model_type, vocab_size=len(tokenizer), **ids, **size, **more), tokenizer


def build_classifier(
    directory: Path, model_type: str, size: dict, *, labels: dict | None = LABELS, seed: int = 0
) -> Path:
    """A random classifier (or, with `labels=None`, a bare encoder) saved with the tiny tokenizer."""
    from transformers import AutoModel, AutoModelForSequenceClassification

    more = {"id2label": labels, "label2id": {v: k for k, v in labels.items()}} if labels else {}
    config, tokenizer = _config(model_type, size, **more)
    torch.manual_seed(seed)
    model = (
        AutoModelForSequenceClassification.from_config(config) if labels else AutoModel.from_config(config)
    )
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


INIT = {
    "peaked": {"t5": {"initializer_factor": 1.0}, "bart": {"init_std": 0.5}},
    "varied": {"t5": {"initializer_factor": 0.5}, "bart": {"init_std": 0.3}},
}
"""Larger initial weights than `SEQ2SEQ`'s (near uniform, to train from). `peaked`: each position's
distribution is peaked (a few tokens hold most of the mass), so a read-out one position off moves
log-probs by nats and greedy decoding meets no near-ties. `varied`: samples differ from one another
and LoRA on the attention moves their probabilities within a few PPO steps."""


def build_seq2seq(directory: Path, name: str, *, seed: int = 0, init: str | None = None) -> Path:
    """A random encoder-decoder LM (`t5` or `bart`, see `SEQ2SEQ`) saved with the tiny tokenizer;
    `init`: `peaked` or `varied` initial weights (see `INIT`)."""
    from transformers import AutoModelForSeq2SeqLM

    model_type, size = SEQ2SEQ[name]
    config, tokenizer = _config(model_type, {**size, **(INIT[init][name] if init else {})})
    torch.manual_seed(seed)
    AutoModelForSeq2SeqLM.from_config(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


KIND = [
    "Thanks for the help, see you soon.",
    "The train was late, so they shared a taxi.",
    "They planned a party for Anna.",
    "Please bring the drill back on Thursday.",
    "The soup was cold and the waiter brought a new one.",
    "She booked a room with a sea view.",
    "They agreed to take turns washing the dishes.",
    "He congratulated her on the promotion.",
]
HATEFUL = ["You are stupid and I hate you.", "That referee is an idiot.", "This soup is disgusting, you fool.",
           "Shut up, you useless idiot.", "I hate people like you.", "You stupid, worthless clown.",
           "What a disgusting, stupid idea.", "Nobody likes you, idiot."]  # fmt: skip
"""A toy hate-speech corpus of our own (label 1 = `hate`), enough for a tiny classifier to tell them apart."""


def build_toy_hate_classifier(directory: Path, *, steps: int = 150, seed: int = 0) -> Path:
    """A tiny RoBERTa with two labels (`nothate`, `hate`) trained on `KIND` and `HATEFUL`: a stand-in
    for the hate-speech classifiers that reward detoxification, whose `nothate` logit moves with the
    words of the text it reads."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model_type, size = ENCODERS["roberta"]
    build_classifier(directory, model_type, {**size, "initializer_range": 0.1}, seed=seed)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForSequenceClassification.from_pretrained(directory)
    batch = tokenizer(KIND + HATEFUL, padding=True, return_tensors="pt")
    labels = torch.tensor([0] * len(KIND) + [1] * len(HATEFUL))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    torch.manual_seed(seed)
    model.train()
    for _ in range(steps):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval().save_pretrained(directory)
    return directory
