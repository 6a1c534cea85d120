"""The `rlhf` command line: one sub-command per stage."""
