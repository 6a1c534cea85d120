"""Preferences as training data, shared by the reward model, DPO and RRHF: records read and held out
(`data`), groups of completions and their pairs (`groups`), and the policy's sequence log-prob
read-out (`sequences`)."""
