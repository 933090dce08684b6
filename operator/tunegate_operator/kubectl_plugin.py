"""`kubectl tunegate`: approve a gate, fetch its report, follow a run's logs, audit data.

Installed as the `kubectl-tunegate` executable, which kubectl finds on PATH. Uses the
current kubeconfig context (or KUBECONFIG), and for reports the usual AWS_* variables
(TUNEGATE_S3_ENDPOINT or AWS_ENDPOINT_URL for S3-compatible stores).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import webbrowser
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from tunegate_operator.api.common import GROUP, VERSION
from tunegate_operator.api.names import (
    APPROVE_ANNOTATION,
    ATTEMPT_LABEL,
    FTJ_LABEL,
    LOCAL_LOG_DIR_ANNOTATION,
)
from tunegate_operator.s3_io import S3, StorageError

# Pods run by the local development runner (no kubelet) keep their logs in files.


class PluginError(Exception):
    pass


def _namespace(explicit: str | None) -> str:
    if explicit:
        return explicit
    try:
        _, active = config.list_kube_config_contexts()
        return str(active["context"].get("namespace") or "default")
    except (config.ConfigException, KeyError, TypeError):
        return "default"


def _get(kind: str, namespace: str, name: str) -> dict[str, Any]:
    try:
        api: Any = client.CustomObjectsApi()
        found: dict[str, Any] = api.get_namespaced_custom_object(
            GROUP, VERSION, namespace, kind, name
        )
        return found
    except ApiException as exc:
        if exc.status == 404:
            raise PluginError(f"{kind[:-1]} {namespace}/{name} not found") from None
        raise


def approve(namespace: str, name: str) -> str:
    gate = _get("evalgates", namespace, name)
    phase = (gate.get("status") or {}).get("phase")
    client.CustomObjectsApi().patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "evalgates",
        name,
        {"metadata": {"annotations": {APPROVE_ANNOTATION: "true"}}},
    )
    if phase != "AwaitingApproval":
        return (
            f"evalgate {name} approved; it is {phase or 'not yet evaluated'}: promotion "
            "happens only once its verdict is Pass"
        )
    return f"evalgate {name} approved; the operator promotes it now"


def verdict_table(status: dict[str, Any]) -> str:
    """The per-suite table, each column as wide as its longest cell."""
    header = ("SUITE", "ROLE", "N", "BASE", "CAND", "DELTA", "INTERVAL", "MDD", "VERDICT")
    rows = [header]
    for row in status.get("results") or []:
        interval = f"[{row['interval']['low']:+.3f}, {row['interval']['high']:+.3f}]"
        mdd = row.get("minimumDetectableDifference")
        rows.append(
            (
                row["suite"],
                row["role"],
                str(row.get("items", "-")),
                f"{row['base']:.3f}" if row.get("base") is not None else "-",
                f"{row['candidate']:.3f}",
                f"{row['delta']:+.3f}",
                interval,
                f"{mdd:.3f}" if mdd is not None else "-",
                row["verdict"],
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(r, widths, strict=True)).rstrip()
        for r in rows
    ]
    decision = status.get("decision") or {}
    lines.append(f"decision: {decision.get('verdict', '-')} ({decision.get('reason', '')})")
    return "\n".join(lines)


def report(namespace: str, name: str, output: Path | None, open_browser: bool) -> str:
    status = _get("evalgates", namespace, name).get("status") or {}
    uri = status.get("report")
    if not uri:
        raise PluginError(f"evalgate {name} has no report yet (phase {status.get('phase')})")
    folder_uri = uri.rsplit("/", 1)[0]
    target = output or Path(f"{name}-report")
    s3 = S3(
        endpoint=os.environ.get("TUNEGATE_S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL"),
        region=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
    )
    files = s3.list_files(folder_uri)
    for relative in files:
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(s3.read_bytes(f"{folder_uri}/{relative}"))
    page = target / uri.rsplit("/", 1)[1]
    if open_browser:
        webbrowser.open(page.resolve().as_uri())
    return f"{verdict_table(status)}\nreport: {page} ({len(files)} files from {folder_uri})"


def _attempt_pods(namespace: str, name: str) -> list[Any]:
    core: Any = client.CoreV1Api()
    pods: list[Any] = core.list_namespaced_pod(
        namespace, label_selector=f"{FTJ_LABEL}={name}"
    ).items
    if not pods:
        raise PluginError(f"finetunejob {name} has no pods (yet) in {namespace}")
    latest = max(int((p.metadata.labels or {}).get(ATTEMPT_LABEL, "0")) for p in pods)
    chosen = [p for p in pods if int((p.metadata.labels or {}).get(ATTEMPT_LABEL, "0")) == latest]
    return sorted(chosen, key=lambda p: p.metadata.name)


def logs(namespace: str, name: str, follow: bool) -> None:
    _get("finetunejobs", namespace, name)
    for pod in _attempt_pods(namespace, name):
        print(f"==> pod {pod.metadata.name} <==", flush=True)
        local = (pod.metadata.annotations or {}).get(LOCAL_LOG_DIR_ANNOTATION)
        if local:
            _print_file(Path(local) / f"{pod.spec.containers[0].name}.log", follow, pod, namespace)
            continue
        core: Any = client.CoreV1Api()
        if follow:
            stream = core.read_namespaced_pod_log(
                pod.metadata.name, namespace, follow=True, _preload_content=False
            )
            for chunk in stream.stream():
                sys.stdout.write(chunk.decode(errors="replace"))
        else:
            sys.stdout.write(core.read_namespaced_pod_log(pod.metadata.name, namespace))


def _print_file(path: Path, follow: bool, pod: Any, namespace: str) -> None:
    offset = 0
    while True:
        if path.exists():
            with path.open("rb") as handle:
                handle.seek(offset)
                chunk = handle.read()
                offset += len(chunk)
                sys.stdout.write(chunk.decode(errors="replace"))
                sys.stdout.flush()
        if not follow:
            return
        current: Any = client.CoreV1Api().read_namespaced_pod(pod.metadata.name, namespace)
        phase = current.status.phase
        if phase in ("Succeeded", "Failed"):
            follow = False  # one last read picks up the tail
        time.sleep(1)


def main(argv: list[str] | None = None) -> int:
    # -n works before or after the subcommand, as with kubectl itself.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-n", "--namespace", default=argparse.SUPPRESS, help="namespace (default: the context's)"
    )
    parser = argparse.ArgumentParser(
        prog="kubectl tunegate", description=__doc__.split("\n")[0], parents=[common]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    approve_cmd = commands.add_parser(
        "approve", help="approve a Pass of a manual EvalGate", parents=[common]
    )
    approve_cmd.add_argument("evalgate")
    report_cmd = commands.add_parser(
        "report", help="download an EvalGate's HTML report", parents=[common]
    )
    report_cmd.add_argument("evalgate")
    report_cmd.add_argument("-o", "--output", type=Path, help="folder (default: <name>-report)")
    report_cmd.add_argument("--open", action="store_true", help="open it in a browser")
    logs_cmd = commands.add_parser(
        "logs", help="logs of a FineTuneJob's latest attempt", parents=[common]
    )
    logs_cmd.add_argument("finetunejob")
    logs_cmd.add_argument("-f", "--follow", action="store_true")
    audit_cmd = commands.add_parser(
        "audit",
        help="run the data audit on a file, folder or s3:// prefix before applying",
    )
    audit_cmd.add_argument("data", help="JSONL file, folder of .jsonl files, or s3:// URI")
    audit_cmd.add_argument(
        "-f", "--filename", type=Path, help="FineTuneJob manifest: its spec.audit and format"
    )
    audit_cmd.add_argument("--format", choices=["chat", "instruction", "text"])
    audit_cmd.add_argument(
        "--contamination", action="append", default=[], help="eval set (file or s3://), repeatable"
    )
    audit_cmd.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    if args.command == "audit":
        return _audit(args)
    try:
        config.load_kube_config()
        namespace = _namespace(getattr(args, "namespace", None))
        if args.command == "approve":
            print(approve(namespace, args.evalgate))
        elif args.command == "report":
            print(report(namespace, args.evalgate, args.output, args.open))
        else:
            logs(namespace, args.finetunejob, args.follow)
    except (PluginError, StorageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ApiException as exc:
        print(f"error: the API server answered {exc.status} {exc.reason}", file=sys.stderr)
        return 1
    return 0


def _audit(args: argparse.Namespace) -> int:
    from tunegate_operator import local_audit

    try:
        status, text = local_audit.run(
            args.data,
            manifest=args.filename,
            data_format=args.format,
            contamination=args.contamination,
            as_json=args.json,
        )
    except local_audit.LocalAuditError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return local_audit.BAD_INPUT
    print(text)
    return status


if __name__ == "__main__":
    sys.exit(main())
