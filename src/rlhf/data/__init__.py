"""Data loading: every format the field uses, read into a few normalized record types.

    from rlhf.data import load_records
    data = load_records(cfg.data, expect="sft")    # -> LoadedData(records, format, kind, report)

Modules by role: `readers` (files -> raw rows with lines), `formats` (registry and detection),
`demonstrations` / `preferences` / `oasst` / `candidates` / `judgments` (one normalizer per
format), `fields` (checked field access), `records` and `errors` (the types), `load` (the entry point),
`templates` (prompt rendering: chat, instruction, few-shot), `tokenize` (ids, labels, truncation, padding) and `inspect` (the `rlhf data` commands).
Nothing heavy (torch, datasets, pyarrow) is imported until a function needs it.
"""

from rlhf.data.errors import DataError, LoadReport
from rlhf.data.formats import FORMATS, FormatSpec, detect_format, format_table
from rlhf.data.inspect import inspect_data, record_to_dict
from rlhf.data.load import KIND_FAMILIES, LoadedData, load_prompts, load_records, prompts_of
from rlhf.data.preferences import hh_messages
from rlhf.data.readers import iter_rows, read_rows
from rlhf.data.records import (
    KINDS,
    Candidates,
    Comparison,
    Correction,
    Demonstration,
    Feedback,
    Label,
    Message,
    Prompt,
    PromptOnly,
    Ranking,
    Rating,
    Record,
    Source,
)
from rlhf.data.templates import PromptRenderer
from rlhf.data.tokenize import (
    IGNORE_INDEX,
    EncodedExample,
    TruncationStats,
    encode_example,
    encode_prompt,
    pad_batch,
    render_prompt,
)

__all__ = [
    "FORMATS",
    "IGNORE_INDEX",
    "KINDS",
    "KIND_FAMILIES",
    "Candidates",
    "Comparison",
    "Correction",
    "DataError",
    "Demonstration",
    "EncodedExample",
    "Feedback",
    "FormatSpec",
    "Label",
    "LoadReport",
    "LoadedData",
    "Message",
    "Prompt",
    "PromptOnly",
    "PromptRenderer",
    "Ranking",
    "Rating",
    "Record",
    "Source",
    "TruncationStats",
    "detect_format",
    "encode_example",
    "encode_prompt",
    "format_table",
    "hh_messages",
    "inspect_data",
    "iter_rows",
    "load_prompts",
    "load_records",
    "pad_batch",
    "prompts_of",
    "read_rows",
    "record_to_dict",
    "render_prompt",
]
