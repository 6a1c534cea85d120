"""What kind of transformer a checkpoint is, read from its config: a decoder-only causal LM, an
encoder-decoder (T5, FLAN-T5, BART: the encoder reads the prompt, the decoder writes the answer),
or an encoder alone (BERT, RoBERTa, DeBERTa, DistilBERT, ModernBERT: classifiers and reward models,
never policies).

transformers registers a causal-LM class for some encoders too (`BertLMHeadModel`) and loads an
encoder-decoder's decoder alone as a causal LM (`BartForCausalLM`): the kind comes from the config
(`is_encoder_decoder`, the model type), never from which class happens to load. The kind of a
checkpoint on disk or on the hub: `rlhf.models.load.kind_of`.
"""

from __future__ import annotations

from typing import Any, Literal

Kind = Literal["causal", "seq2seq", "encoder"]

ENCODER_ONLY = frozenset(
    {
        "albert",
        "bert",
        "camembert",
        "convbert",
        "deberta",
        "deberta-v2",
        "distilbert",
        "electra",
        "ernie",
        "flaubert",
        "funnel",
        "ibert",
        "layoutlm",
        "longformer",
        "megatron-bert",
        "mobilebert",
        "modernbert",
        "mpnet",
        "nezha",
        "nystromformer",
        "rembert",
        "roberta",
        "roberta-prelayernorm",
        "roc_bert",
        "roformer",
        "squeezebert",
        "xlm",
        "xlm-roberta",
        "xlm-roberta-xl",
        "xmod",
        "yoso",
    }
)
"""Model types that are encoders only (bidirectional attention, no generation of their own)."""


def kind_of_config(config: Any) -> Kind:
    """The kind of a transformers `PretrainedConfig` (or anything with `model_type`)."""
    if getattr(config, "is_encoder_decoder", False):
        return "seq2seq"
    if getattr(config, "model_type", None) in ENCODER_ONLY:
        return "encoder"
    return "causal"
