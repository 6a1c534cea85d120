"""The built-in tiny model (`builtin:tiny`): a small Llama and its tokenizer, made offline.

Nothing is downloaded. The tokenizer is byte-level BPE: the 256 byte symbols (so any text,
any language, round-trips exactly) plus merges learned from the short text below with a
deterministic tie-break, so many common English words are single tokens and the result is
the same on every machine. The model has random weights drawn from a seed: it is for
demos and tests of the training loops, not for quality.
"""

from __future__ import annotations

from collections import Counter
from functools import lru_cache
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from rlhf.config.parts import BUILTIN_TINY

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK, *ROLE_TOKENS)  # ids 0..6, in this order
VOCAB_SIZE = 512
MAX_LENGTH = 1024

# One turn per message, each ended by EOS, so a generated assistant turn stops at EOS.
# `{% generation %}` marks the assistant text for `return_assistant_tokens_mask=True`.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('unknown chat role: ' + message['role']) }}"
    "{% endif %}"
    "{{ '<|' + message['role'] + '|>\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] + eos_token }}{% endgeneration %}"
    "{% else %}{{ message['content'] + eos_token }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

# The text the merges are learned from: simple English, a little chat and a little code.
# Changing it changes the vocabulary, and so every saved tiny model; do not edit lightly.
_MERGE_TEXT = """\
Once upon a time there was a little girl who loved to play in the park with her friends.
One day she saw a big red ball under the tree. She wanted to play with it, so she asked her mom.
Her mom said that she could play with the ball if she shared it with the other children.
The girl was happy and they played together all day. When the sun went down they went home.
The user asks a question and the assistant gives a helpful answer. The answer should be
short, correct and kind. If the assistant does not know the answer, it says so and explains
what it would need to find out. A good answer is better than a long answer.
What is the capital of France? The capital of France is Paris.
How many days are there in a week? There are seven days in a week.
Please write a short story about a cat and a dog who became friends.
def add(self, value):
    return self.total + value

for item in items:
    if item is not None:
        print(item)

import torch
import numpy as np
class Model:
    def __init__(self, config):
        self.config = config
The model is trained with reinforcement learning from human feedback. A reward model scores
each answer, and the policy is updated to make good answers more likely than bad answers.
The reference model keeps the policy close to where it started. We compare the answers and
choose the better one. This is the first step, and then we train the model again and again.
Tom and his sister found a small bird in the garden. The bird could not fly because its wing
was hurt. Tom said, "We must help the bird." His sister nodded and they took the bird inside.
They gave it water and some bread. After a few days the bird was better and it flew away.
Tom and his sister were sad to see it go, but they were also happy because the bird was free.
Every morning the old man walked to the river to look at the water and think about his life.
He liked the quiet sound of the river and the birds singing in the trees near the water.
Thank you for your question. Here is a list of three things you can do today:
1. Read a book for one hour.
2. Take a walk outside and look at the sky.
3. Call a friend and ask how they are doing.
I think this is a great idea, but I am not sure it will work. Could you tell me more about it?
Yes, of course. I would be happy to help you with that. Let me know if you have any other questions.
while True:
    line = input()
    if not line:
        break
    result = process(line)
    print(f"result: {result}")
"""


def _byte_symbols() -> list[str]:
    """The printable stand-ins byte-level BPE uses for the bytes 0..255, in byte order.

    This is the GPT-2 byte-to-unicode table that `pre_tokenizers.ByteLevel` applies: printable
    bytes stand for themselves, the others for the characters from U+0100 on.
    """
    printable = {
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    }
    symbols, shifted = [], 0
    for byte in range(256):
        if byte in printable:
            symbols.append(chr(byte))
        else:
            symbols.append(chr(256 + shifted))
            shifted += 1
    return symbols


def _learn_merges(text: str, num_merges: int, reserved: set[str]) -> list[tuple[str, str]]:
    """Greedy BPE on `text`: merge the most frequent adjacent pair, ties broken by the pair itself.

    The explicit tie-break (not dict or hash order) is what makes the vocabulary reproducible.
    """
    pieces = pre_tokenizers.ByteLevel(add_prefix_space=False).pre_tokenize_str(text)
    words = Counter(piece for piece, _ in pieces)
    splits = {word: list(word) for word in words}
    merges: list[tuple[str, str]] = []
    known = set(reserved) | {symbol for word in words for symbol in word}
    while len(merges) < num_merges:
        pairs: Counter[tuple[str, str]] = Counter()
        for word, count in words.items():
            symbols = splits[word]
            for pair in zip(symbols, symbols[1:]):
                pairs[pair] += count
        candidates = [
            (-count, pair) for pair, count in pairs.items() if count >= 2 and "".join(pair) not in known
        ]
        if not candidates:
            break
        _, best = min(candidates)
        merges.append(best)
        known.add("".join(best))
        for word, symbols in splits.items():
            splits[word] = _apply_merge(symbols, best)
    return merges


def _apply_merge(symbols: list[str], pair: tuple[str, str]) -> list[str]:
    merged, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            merged.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            merged.append(symbols[i])
            i += 1
    return merged


@lru_cache(maxsize=4)
def _backend_json(text: str = _MERGE_TEXT, vocab_size: int = VOCAB_SIZE) -> str:
    """The `tokenizers` tokenizer as JSON; cached because it is immutable, unlike the HF wrapper."""
    vocab: dict[str, int] = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for symbol in _byte_symbols():
        vocab[symbol] = len(vocab)
    num_merges = vocab_size - len(vocab)
    merges = _learn_merges(text, num_merges, reserved=set(vocab))
    for left, right in merges:
        vocab[left + right] = len(vocab)

    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    # Like Llama: every encoded text starts with BOS; EOS is added by whoever builds examples.
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B:1", special_tokens=[(BOS, vocab[BOS])]
    )
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    return tokenizer.to_str()


def build_tiny_tokenizer(text: str | None = None, vocab_size: int = VOCAB_SIZE) -> PreTrainedTokenizerFast:
    """The tiny model's tokenizer: byte-level BPE, 512 tokens, pad/bos/eos/unk = ids 0/1/2/3.

    Pad is its own token (not EOS), so masking padding by id never hides an EOS. Encoding adds
    BOS only. Padding is on the right; callers that generate set `padding_side = "left"`.
    `text` and `vocab_size` learn the merges from other text instead (a task's own tokenizer,
    as the demo makes: its words become single tokens); any text still round-trips.
    """
    if vocab_size < len(SPECIAL_TOKENS) + 256:
        raise ValueError(f"vocab_size must be at least {len(SPECIAL_TOKENS) + 256} (specials and bytes)")
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_backend_json(text or _MERGE_TEXT, vocab_size)),
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        extra_special_tokens=list(ROLE_TOKENS),
        chat_template=CHAT_TEMPLATE,
        model_max_length=MAX_LENGTH,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )


def tiny_config(tokenizer: PreTrainedTokenizerFast | None = None, **overrides) -> LlamaConfig:
    """The tiny Llama's config: 2 layers, hidden 64, 4 heads (2 KV heads), tied embeddings."""
    tokenizer = tokenizer or build_tiny_tokenizer()
    settings = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        # Every layer width a multiple of 32: bitsandbytes' CPU inference kernel for 4-bit weights
        # needs it, so QLoRA on the tiny model can also generate.
        intermediate_size=192,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=MAX_LENGTH,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    settings.update(overrides)
    return LlamaConfig(**settings)


def build_tiny_model(
    seed: int = 0, tokenizer: PreTrainedTokenizerFast | None = None, **config_overrides
) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """A randomly initialised tiny Llama (float32) and its tokenizer; same seed, same weights.

    The global torch RNG is left as it was, so building a model does not shift a run's seed.
    `tokenizer` (from `build_tiny_tokenizer(text, vocab_size)`) replaces the built-in one.
    """
    builtin = tokenizer is None
    tokenizer = tokenizer or build_tiny_tokenizer()
    config = tiny_config(tokenizer, **config_overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    if builtin:
        # Adapters saved on top of this model record this as their base, so they load back here.
        model.config._name_or_path = BUILTIN_TINY
        model.name_or_path = BUILTIN_TINY
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return model, tokenizer


def save_tiny(
    directory: str | Path, seed: int = 0, tokenizer: PreTrainedTokenizerFast | None = None, **config_overrides
) -> Path:
    """Write the tiny model and tokenizer as a standard Hugging Face directory; returns it.

    Plain `AutoModelForCausalLM.from_pretrained(dir)` and `AutoTokenizer.from_pretrained(dir)` load it.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model, tokenizer = build_tiny_model(seed, tokenizer, **config_overrides)
    # Not `model.save_pretrained`: under torch.distributed transformers writes only on rank 0, and
    # every process builds its own copy of the preset. The files are the same as it would write.
    model.config.architectures = [type(model).__name__]  # as save_pretrained records it
    model.config.save_pretrained(directory)
    model.generation_config.save_pretrained(directory)
    # The tied output matrix is stored once, under the input embedding's name, as transformers does,
    # so that heads without an `lm_head` (sequence classification) find the embedding.
    state = {
        name: tensor.contiguous()
        for name, tensor in model.state_dict().items()
        if not (name == "lm_head.weight" and model.config.tie_word_embeddings)
    }
    save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save_pretrained(directory)
    return directory
