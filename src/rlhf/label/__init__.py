"""Collecting human feedback (`rlhf label`).

tasks.py      what a project asks and the canonical form of an answer (display order undone)
store.py      the project's database: items, annotators, assignments, submissions
backend.py    SQLite (default) or PostgreSQL (a database URL): connections, SQL dialect, write locks
project.py    a project from a candidates file (pairs split, gold answers checked)
agreement.py  raw agreement, Cohen's and Fleiss' kappa, Krippendorff's alpha (stdlib only)
quality.py    progress, agreement per question, per-annotator pace / agreement / gold accuracy
export.py     judgments -> files `rlhf reward` / `rlhf sft` read (majority or every judgment)
server.py     the web app: pages in `rlhf/assets/label`, JSON API, tokens
"""
