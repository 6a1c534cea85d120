"""Collecting human feedback: the labeling app's storage, tasks, agreement metrics and export (`rlhf label`)."""
