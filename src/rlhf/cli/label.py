"""`rlhf label ...`: create a labeling project, serve it, add annotators, let an LLM judge label it,
export, show stats."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from rlhf.cli.common import add_set_arg

DEFAULT_URL = "http://127.0.0.1:8000"


def add_label_parser(sub) -> None:
    label = sub.add_parser(
        "label",
        help="the labeling web app: comparisons, rankings, ratings, labels, corrections, feedback",
        description="Collect human feedback on model completions in the browser; export it for `rlhf reward` / `rlhf sft`.",
    )
    cmds = label.add_subparsers(dest="label_command", metavar="<subcommand>", required=True)

    init = cmds.add_parser(
        "init", help="create a project from a file of candidates (what `rlhf generate` writes)"
    )
    init.add_argument("project", help="the project directory to create")
    init.add_argument(
        "--tasks", required=True, metavar="FILE", help="candidates: {prompt, completions} per row"
    )
    init.add_argument(
        "--type", required=True, metavar="Q[,Q...]",
        help="questions asked on each item: pairwise, ranking, rating, label, correction, feedback (comma-separated)",
    )  # fmt: skip
    init.add_argument(
        "--overlap", type=int, default=1, help="judgments each item needs, from different annotators"
    )
    init.add_argument(
        "--scale", type=float, nargs=2, metavar=("LOW", "HIGH"), default=[1.0, 7.0], help="rating scale"
    )
    init.add_argument(
        "--scale-step", default="1", help="ratings are LOW + a multiple of this; 'none' for any number"
    )
    init.add_argument(
        "--labels", default="okay,harmful", help="categories of the label question (comma-separated)"
    )
    text = init.add_mutually_exclusive_group()
    text.add_argument("--instructions", default="", help="text shown to annotators above every item")
    text.add_argument("--instructions-file", metavar="FILE", help="read the instructions from a file")
    init.add_argument(
        "--no-shuffle",
        action="store_true",
        help="show completions in file order (default: shuffled per annotator)",
    )
    init.add_argument("--owner", default="owner", help="name of the owner account created with the project")
    init.add_argument(
        "--db",
        metavar="URL",
        help="PostgreSQL database URL for teams (default: SQLite in the project folder)",
    )
    init.add_argument(
        "--url", default=DEFAULT_URL, help="where the server will be reached, for the login link"
    )
    init.set_defaults(func=_init)

    serve = cmds.add_parser("serve", help="start the labeling server (127.0.0.1:8000 by default)")
    serve.add_argument("project")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    serve.add_argument("--port", type=int, default=8000, help="port (0: any free port; the URL is printed)")
    serve.add_argument("--quiet", action="store_true", help="do not log requests")
    serve.add_argument(
        "--session-hours", type=float, default=7 * 24,
        help="how long a login lasts before its session ends on the server (default 168: a week)",
    )  # fmt: skip
    serve.add_argument(
        "--audit", action="store_true",
        help="hand out first the items an LLM judge (`rlhf label judge`) was least sure of or inconsistent on",
    )  # fmt: skip
    serve.set_defaults(func=_serve)

    judge = cmds.add_parser(
        "judge",
        help="an LLM judge labels the items as an annotator of its own (judge:NAME), beside the people",
    )
    judge.add_argument("project")
    judge.add_argument("--config", metavar="FILE", help="YAML of the judge's settings (url, model_name, ...)")
    add_set_arg(judge, "url=http://127.0.0.1:8001/v1 model_name=judge")
    judge.add_argument(
        "--name",
        help="the judge's annotator name, judge:NAME (default: its model_name, or its model's folder name)",
    )
    judge.add_argument("--again", action="store_true", help="judge again the items this judge judged before")
    judge.add_argument("--limit", type=int, help="judge at most this many items")
    judge.set_defaults(func=_judge)

    revoke = cmds.add_parser(
        "revoke", help="end an annotator's token and every login made with it (a lost or leaked link)"
    )
    revoke.add_argument("project")
    revoke.add_argument("name")
    revoke.add_argument(
        "--new-token", action="store_true",
        help="issue them a new token and login link instead (their judgments stay theirs)",
    )  # fmt: skip
    revoke.add_argument(
        "--url", help="where annotators reach the server (default: the URL `serve` last used)"
    )
    revoke.set_defaults(func=_revoke)

    add = cmds.add_parser("add-annotator", help="register an annotator and print their personal login link")
    add.add_argument(
        "names",
        nargs="+",
        metavar="[PROJECT] NAME",
        help="the project (default: --project, $RLHF_LABEL_PROJECT or .) and one name or several",
    )
    add.add_argument("--project", help="the project directory")
    add.add_argument(
        "--owner", action="store_true", help="make them an owner (stats, export, adding annotators)"
    )
    add.add_argument("--url", help="where annotators reach the server (default: the URL `serve` last used)")
    add.set_defaults(func=_add_annotator)

    export = cmds.add_parser("export", help="write judgments as a file `rlhf reward` / `rlhf sft` read")
    export.add_argument("project")
    export.add_argument(
        "--format", required=True, choices=["pairs", "rankings", "ratings", "labels", "sft", "judgments"]
    )
    export.add_argument(
        "--resolve", default="majority", choices=["majority", "all"],
        help="several annotators per item: majority (one row per item) or all (every judgment, weighted)",
    )  # fmt: skip
    export.add_argument("--output", metavar="FILE", help="default: PROJECT/exports/FORMAT-RESOLVE.jsonl")
    export.add_argument(
        "--include-incomplete", action="store_true", help="also items with fewer judgments than the overlap"
    )
    export.add_argument(
        "--sources", metavar="SOURCE",
        help="only these judgments: people, judge (every LLM judge) or judge:NAME (default: all; each row "
        "names its feedback_source)",
    )  # fmt: skip
    export.set_defaults(func=_export)

    stats = cmds.add_parser("stats", help="progress, agreement and per-annotator quality")
    stats.add_argument("project")
    stats.add_argument("--json", action="store_true", help="print the stats as JSON")
    stats.set_defaults(func=_stats)


def _open(project: str):
    from rlhf.label.store import DATABASE_FILE, DB_FILE, Store, StoreError

    if not _is_project(project):
        raise StoreError(
            f"{project} is not a labeling project (no {DB_FILE} or {DATABASE_FILE}); "
            "create one with `rlhf label init`"
        )
    return Store(project)


def _init(args: argparse.Namespace) -> None:
    from rlhf.config.core import ConfigError
    from rlhf.label.project import init_project
    from rlhf.label.tasks import ProjectConfig

    instructions = args.instructions
    if args.instructions_file:
        try:
            instructions = Path(args.instructions_file).read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise ConfigError(f"{args.instructions_file}: not UTF-8 text (byte {err.start + 1})") from None
    _check_text_args(owner=args.owner, url=args.url, instructions=instructions, db=args.db or "")
    step = None if args.scale_step.lower() in ("none", "null", "") else float(args.scale_step)
    try:
        cfg = ProjectConfig(
            questions=[q.strip() for q in args.type.split(",") if q.strip()], overlap=args.overlap,
            scale=list(args.scale), scale_step=step, labels=[x.strip() for x in args.labels.split(",") if x.strip()],
            instructions=instructions, shuffle=not args.no_shuffle,
        )  # fmt: skip
    except ValueError as err:
        raise ConfigError(str(err)) from None
    store, token, report = init_project(args.project, args.tasks, cfg, owner=args.owner, database_url=args.db)
    store.set_meta("url", args.url)
    print(
        f"created {args.project}: {report.summary()}; questions {', '.join(cfg.questions)}, overlap {cfg.overlap}"
    )
    print(f"owner {args.owner!r} token (shown once; only its hash is stored): {token}")
    print(f"owner login link: {args.url}/login?token={token}")
    print(f"next: rlhf label add-annotator {args.project} NAME; rlhf label serve {args.project}")


def _check_text_args(**texts: str) -> None:
    """Refuse a command-line text that cannot be stored (bytes that are not UTF-8 reach Python as
    lone surrogates), before anything is written."""
    from rlhf.config.core import ConfigError
    from rlhf.data.text import broken_text

    broken = broken_text(texts)
    if broken:
        raise ConfigError(f"the argument {broken}")


def _serve(args: argparse.Namespace) -> None:
    from rlhf.label.server import serve

    store = _open(args.project)

    def ready(url: str) -> None:
        print(f"serving {args.project} at {url} (Ctrl-C stops)", flush=True)

    if not 0 < args.session_hours <= 24 * 365:
        from rlhf.config.core import ConfigError

        raise ConfigError(f"--session-hours must be between 0 and 8760 (a year), not {args.session_hours:g}")
    serve(
        store,
        args.host,
        args.port,
        on_ready=ready,
        quiet=args.quiet,
        session_seconds=args.session_hours * 3600,
        audit=args.audit,
    )


def _revoke(args: argparse.Namespace) -> None:
    store = _open(args.project)
    token = store.revoke(args.name, reissue=args.new_token)
    if token is None:
        print(f"revoked {args.name!r}: their token and every login made with it no longer work")
        return
    url = args.url or store.get_meta("url") or DEFAULT_URL
    print(f"revoked {args.name!r}'s old token and logins; new token (shown once): {token}")
    print(f"login link: {url.rstrip('/')}/login?token={token}")


def _add_annotator(args: argparse.Namespace) -> None:
    """`add-annotator [PROJECT] NAME [NAME ...]`: with --project every argument is a name; else the
    first of several is the project, unless it is none and $RLHF_LABEL_PROJECT names one."""
    from rlhf.config.core import ConfigError
    from rlhf.label.store import StoreError

    default = os.environ.get("RLHF_LABEL_PROJECT")
    first_is_project = (
        not args.project and len(args.names) > 1 and (_is_project(args.names[0]) or not default)
    )
    project = args.names[0] if first_is_project else args.project or default or "."
    names = args.names[1:] if first_is_project else args.names
    if len(set(names)) != len(names):
        raise ConfigError(f"a name is given twice: {' '.join(names)}")
    _check_text_args(url=args.url or "", **{f"name {i + 1}": name for i, name in enumerate(names)})
    store = _open(project)
    taken = {a.name for a in store.annotators()} & set(names)
    if taken:  # checked before adding any: a command adds all of its names or none
        named = ", ".join(repr(name) for name in sorted(taken))
        verb = "already exists" if len(taken) == 1 else "already exist"
        raise StoreError(f"an annotator named {named} {verb} in {project}; nothing was added")
    url = args.url or store.get_meta("url") or DEFAULT_URL
    role = "owner" if args.owner else "annotator"
    for name in names:
        token = store.add_annotator(name, role)
        print(f"added {role} {name!r}; token (shown once): {token}")
        print(f"login link: {url.rstrip('/')}/login?token={token}")


def _is_project(path: str) -> bool:
    from rlhf.label.store import DATABASE_FILE, DB_FILE

    return any((Path(path) / name).is_file() for name in (DB_FILE, DATABASE_FILE))


def _judge(args: argparse.Namespace) -> None:
    from rlhf.config.core import ConfigError, load_config
    from rlhf.judge.config import JudgeConfig
    from rlhf.judge.project import judge_project

    store = _open(args.project)
    cfg = load_config(JudgeConfig, args.config, args.overrides)
    if not cfg.served:
        raise ConfigError(
            "the judge needs `url` (an OpenAI-compatible endpoint) and `model_name` (--set url=... "
            "model_name=...), or a local `model` (--set model=PATH)"
        )
    default_name = cfg.model_name or Path(str(cfg.model)).name
    stats = judge_project(store, cfg, args.name or default_name, again=args.again, limit=args.limit)
    print(
        f"{stats['judge']} judged {stats['items']} items ({stats['question']}): {stats['verdicts']} verdicts, "
        f"{stats['abstained']} abstained, {stats['inconsistent']} inconsistent; {stats['requests_sent']} requests "
        "sent (the rest from the cache)"
    )
    if stats["items"]:
        print(
            f"next: rlhf label stats {args.project} (agreement with people); rlhf label serve {args.project} --audit"
        )


def _export(args: argparse.Namespace) -> None:
    from rlhf.files import write_json_atomic
    from rlhf.label.export import export_rows, write_export

    store = _open(args.project)
    rows, report = export_rows(
        store, args.format, args.resolve, include_incomplete=args.include_incomplete, sources=args.sources
    )
    output = Path(args.output or Path(args.project) / "exports" / f"{args.format}-{args.resolve}.jsonl")
    write_export(rows, output)
    side = output.with_suffix(".report.json")
    write_json_atomic(side, report.as_dict())
    print(f"wrote {output}: {report.summary()} (report: {side})")


def _stats(args: argparse.Namespace) -> None:
    from rlhf.label.quality import format_stats, project_stats

    stats = project_stats(_open(args.project))
    if args.json:
        json.dump(stats, sys.stdout, indent=2)
        print()
    else:
        print(format_stats(stats))
