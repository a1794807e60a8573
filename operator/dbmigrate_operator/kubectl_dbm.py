"""``kubectl dbm``: read and act on DatabaseMigrations from a terminal (a kubectl plugin).

Installed as the console script ``kubectl-dbm``, so ``kubectl dbm ...`` finds it on PATH. It drives
``kubectl`` itself (the user's kubeconfig, context and credentials; no API client of its own) and
needs only what the user may do anyway: get DatabaseMigrations, read Job logs, annotate.

    kubectl dbm status [NAME]     a readable summary: versions, conditions, the plan
    kubectl dbm plan NAME         the plan's SQL and findings (from status, else the plan Job's log)
    kubectl dbm approve NAME      show the plan, then annotate dbmigrate.dev/approve=<its hash>
    kubectl dbm rerun NAME        ask for a new run (dbmigrate.dev/rerun=<now>)
    kubectl dbm logs NAME         the last run's Job logs
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any, NoReturn

from dbmigrate_operator import constants as c
from dbmigrate_runner.sqlplan import from_dict, render_sql


class Failure(Exception):
    """A message for the user; exit code 1."""


class Kubectl:
    def __init__(self, namespace: str | None, context: str | None, kubeconfig: str | None) -> None:
        self.namespace = namespace
        self.flags = [
            *(["--context", context] if context else []),
            *(["--kubeconfig", kubeconfig] if kubeconfig else []),
        ]
        self.binary = os.environ.get("KUBECTL", "kubectl")

    def run(self, *args: str, namespaced: bool = True) -> str:
        ns = ["-n", self.namespace] if namespaced and self.namespace else []
        proc = subprocess.run(
            [self.binary, *self.flags, *ns, *args], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            raise Failure(proc.stderr.strip() or f"kubectl {' '.join(args)} failed")
        return proc.stdout

    def dbm(self, name: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.run("get", f"{c.PLURAL}.{c.GROUP}", name, "-o", "json"))
        return data


def _true(status: dict[str, Any]) -> dict[str, Any]:
    return next((x for x in status.get("conditions") or [] if x.get("status") == "True"), {})


def _ready(status: dict[str, Any]) -> str:
    cond: dict[str, Any] = next((x for x in status.get("conditions") or [] if x.get("type") == c.READY), {})
    return str(cond.get("status") or "Unknown")


def status_list(k: Kubectl, all_namespaces: bool) -> str:
    args = ["get", f"{c.PLURAL}.{c.GROUP}", "-o", "json"]
    data = json.loads(k.run(*args, "-A") if all_namespaces else k.run(*args))
    rows = [("NAMESPACE", "NAME", "READY", "PHASE", "VERSION", "REASON")]
    for item in data.get("items") or []:
        meta, status = item["metadata"], item.get("status") or {}
        rows.append(
            (
                meta.get("namespace", ""),
                meta["name"],
                _ready(status),
                str(status.get("phase") or ""),
                str(status.get("currentVersion") or "-"),
                str(_true(status).get("reason") or ""),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def status_one(cr: dict[str, Any]) -> str:
    meta, spec, status = cr["metadata"], cr.get("spec") or {}, cr.get("status") or {}
    lines = [
        f"{meta['namespace']}/{meta['name']}  image {spec.get('image')}  tool {spec.get('tool', 'aerich')}  "
        f"approval {spec.get('approval', 'Auto')}",
        f"Ready: {_ready(status)}  phase: {status.get('phase', '-')}  "
        f"version: {status.get('currentVersion') or '-'}  applied: {status.get('appliedCount', 0)}",
    ]
    for cond in status.get("conditions") or []:
        if cond.get("status") == "True":
            lines.append(f"{cond['type']}: {cond.get('reason', '')}: {cond.get('message', '')}")
    run = status.get("lastRun") or {}
    if run:
        lines.append(
            f"last run: Job {run.get('job')} ({run.get('command')}) {run.get('outcome')}: "
            f"{run.get('message', '')}"
        )
    plan = status.get("plan") or {}
    if plan:
        lines.append(
            f"plan {plan.get('hash')}: {plan.get('pendingCount', 0)} migration(s), "
            f"{plan.get('statements', 0)} statement(s), {plan.get('findingsCount', 0)} finding(s)"
            + (f"; approved by {plan['approvedBy']}" if plan.get("approvedBy") else "; not approved")
        )
    return "\n".join(lines)


def plan_text(k: Kubectl, cr: dict[str, Any]) -> tuple[str, str]:
    """(readable plan, its hash): the SQL from status, else from the plan Job's log, checked against
    the hash in status either way."""
    plan = (cr.get("status") or {}).get("plan") or {}
    name = cr["metadata"]["name"]
    if not plan.get("hash"):
        raise Failure(f"{name} has no plan (spec.approval is Auto, or the plan Job has not reported yet)")
    header = [
        f"# plan {plan['hash']} of {cr['metadata']['namespace']}/{name}",
        f"# pending ({plan.get('pendingCount', 0)}): {', '.join(plan.get('pending') or []) or '-'}",
        f"# findings: {plan.get('findingsCount', 0)}, to review: "
        f"{plan.get('reviewCount', plan.get('findingsCount', 0))}",
    ]
    if plan.get("lintIgnore"):
        header.append(f"# lint rules silenced (spec.lint.ignore): {', '.join(plan['lintIgnore'])}")
    for f in plan.get("findings") or []:
        rule = f" [{f['severity']} {f.get('rule', '')}]" if f.get("severity") else ""
        header.append(
            f"#   {f['migration']} statement {f['statement']}: {f['kind']} {f.get('target', '')}{rule}"
        )
    if plan.get("opaque"):
        header.append(f"# not SQL (Python code runs): {', '.join(plan['opaque'])}")
    if plan.get("image"):
        header.append(f"# planned from image {plan['image']}: the approved run uses it")
    if plan.get("approvedBy"):
        header.append(f"# approved by {plan['approvedBy']}")
    sql = plan.get("sql")
    if not sql:
        sql = _sql_from_log(k, str(plan.get("job") or ""), str(plan["hash"]))
    return "\n".join(header) + "\n" + sql, str(plan["hash"])


def _sql_from_log(k: Kubectl, job: str, expected: str) -> str:
    log = k.run("logs", f"job/{job}", "-c", c.CONTAINER_NAME)
    for line in log.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("event") == "plan.document":
            try:
                document = from_dict(record["plan"])
            except (ValueError, KeyError, TypeError) as exc:
                raise Failure(f"the plan in Job {job}'s log is not usable: {exc}") from None
            if document.hash != expected:
                raise Failure(f"the plan in Job {job}'s log has hash {document.hash}, status says {expected}")
            return render_sql(document)
    raise Failure(f"Job {job}'s log holds no plan (is the Job gone? kubectl dbm rerun asks for a new one)")


def confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        return False
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kubectl dbm", description=__doc__.split("\n\n")[0])
    parser.set_defaults(namespace=None, context=None, kubeconfig=None)
    # Like kubectl's own flags: before or after the command (kubectl dbm plan NAME -n ns).
    common = argparse.ArgumentParser(add_help=False)
    for parent in (parser, common):
        default = None if parent is parser else argparse.SUPPRESS
        parent.add_argument("-n", "--namespace", default=default)
        parent.add_argument("--context", default=default)
        parent.add_argument("--kubeconfig", default=default)
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, parents=[common])

    status = command("status", "a readable summary: versions, conditions, the plan")
    status.add_argument("name", nargs="?")
    status.add_argument("-A", "--all-namespaces", action="store_true")
    command("plan", "the plan's SQL and findings").add_argument("name")
    approve = command("approve", "show the plan, then approve its hash (annotation)")
    approve.add_argument("name")
    approve.add_argument("-y", "--yes", action="store_true", help="do not ask (the plan is still shown)")
    command("rerun", "ask for a new run").add_argument("name")
    command("logs", "the last run's Job logs").add_argument("name")
    return parser


def run(args: argparse.Namespace, out: Any) -> int:
    k = Kubectl(args.namespace, args.context, args.kubeconfig)
    if args.command == "status":
        text = status_one(k.dbm(args.name)) if args.name else status_list(k, args.all_namespaces)
        print(text, file=out)
        return 0
    if args.command == "plan":
        text, _ = plan_text(k, k.dbm(args.name))
        print(text, file=out)
        return 0
    if args.command == "approve":
        cr = k.dbm(args.name)
        text, hash_ = plan_text(k, cr)
        print(text, file=out)
        if not args.yes and not confirm(f"Approve plan {hash_}?"):
            print("not approved", file=out)
            return 1
        k.run(
            "annotate", f"{c.PLURAL}.{c.GROUP}", args.name, f"{c.APPROVE_ANNOTATION}={hash_}", "--overwrite"
        )
        print(f"approved plan {hash_} ({c.APPROVE_ANNOTATION})", file=out)
        return 0
    if args.command == "rerun":
        stamp = str(int(time.time()))
        k.run("annotate", f"{c.PLURAL}.{c.GROUP}", args.name, f"{c.RERUN_ANNOTATION}={stamp}", "--overwrite")
        print(f"asked for a new run of {args.name} ({c.RERUN_ANNOTATION}={stamp})", file=out)
        return 0
    job = ((k.dbm(args.name).get("status") or {}).get("lastRun") or {}).get("job")
    if not job:
        raise Failure(f"{args.name} has no run yet")
    print(k.run("logs", f"job/{job}", "-c", c.CONTAINER_NAME), end="", file=out)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        return run(args, sys.stdout)
    except Failure as exc:
        _fail(str(exc))


def _fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(1)


if __name__ == "__main__":
    raise SystemExit(main())
