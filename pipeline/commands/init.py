"""`python -m pipeline init`: write platform.yaml for an organisation and derive the tree from it.

    init --org acme --registry registry.acme.dev/ml --git-url https://git.acme.dev/ml/llm.git --domain acme.dev
    init --check     every derived file agrees with platform.yaml (exit 1 lists each difference)
    init --apply     rewrite the derived files after editing platform.yaml by hand

Values not given keep platform.yaml's, except those derived from a given one (a new --domain
gives new hosts, IdP URLs and label domain unless those are given too)."""

from __future__ import annotations

import argparse
import io
from collections.abc import Callable
from typing import Any

from rich.console import Console

from pipeline.core.context import RunContext
from pipeline.core.exit_codes import ExitCode, UsageError
from pipeline.core.platform import PLATFORM_FILE, PlatformError, load_platform, parse_platform
from pipeline.core.result import CommandResult
from pipeline.platform_config.apply import ApplyError, apply
from pipeline.platform_config.derived import derive, round_trip_yaml

NAME = "init"
HELP = "write platform.yaml (registry, git, domain, IdP, model, envs) and derive the repo from it; --check verifies"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="verify every derived file agrees with platform.yaml")
    mode.add_argument("--apply", action="store_true", help="rewrite the derived files from platform.yaml as it is")
    parser.add_argument("--org", metavar="NAME", help="organisation name (DNS label)")
    parser.add_argument("--registry", metavar="HOST/NAMESPACE", help="image and chart registry, no scheme")
    parser.add_argument("--git-url", metavar="URL", help="GitOps repository (https) Argo CD reads")
    parser.add_argument("--git-ssh-url", metavar="URL", help="the same repository over ssh (default: from --git-url)")
    parser.add_argument("--branch", metavar="NAME", help="GitOps branch (default: platform.yaml's)")
    parser.add_argument("--domain", metavar="DOMAIN", help="base domain: hosts llm.<domain>, llm.<env>.<domain>")
    parser.add_argument("--label-domain", metavar="DOMAIN", help="label/annotation prefix (default: llm.<domain>)")
    parser.add_argument("--homepage", metavar="URL", help="where the repo is browsed (default: from --git-url)")
    parser.add_argument("--contact", metavar="EMAIL", help="chart maintainer e-mail (default: platform@<domain>)")
    parser.add_argument("--issuer", metavar="URL", help="JWT issuer (default: https://auth.<domain>/)")
    parser.add_argument("--audience", metavar="AUD", help="JWT audience the gateway requires")
    parser.add_argument("--jwks-url", metavar="URL", help="JWKS URL (default: <issuer>.well-known/jwks.json)")
    parser.add_argument("--model-id", metavar="ORG/NAME", help="Hugging Face model id")
    parser.add_argument(
        "--model-revision",
        metavar="SHA",
        help="the model's 40-hex commit a new --model-id starts from (app/model.yaml owns the revision after that)",
    )
    parser.add_argument("--served-model-name", metavar="NAME", help="model name clients request")
    parser.add_argument("--gpu-pool-label", metavar="KEY", help="node label naming an env's GPU pool")
    parser.add_argument("--spot-label", metavar="KEY", help="node label (value spot) of spot GPU nodes")
    parser.add_argument("--spot-taint", metavar="KEY", help="taint (value true) of spot GPU nodes")
    parser.add_argument(
        "--env",
        action="append",
        metavar="NAME[=NAMESPACE][@CLUSTER]",
        help="an environment, in promotion order (repeat; default: platform.yaml's). NAMESPACE and CLUSTER default to "
        "that env's in platform.yaml, else llm-NAME on the cluster Argo CD runs in",
    )


# Flags that change a value of platform.yaml (argparse dests); --check/--apply take none of them.
VALUE_FLAGS = (
    "org", "registry", "git_url", "git_ssh_url", "branch", "domain", "label_domain", "homepage", "contact",
    "issuer", "audience", "jwks_url", "model_id", "model_revision", "served_model_name", "gpu_pool_label",
    "spot_label", "spot_taint", "env",
)  # fmt: skip
IN_CLUSTER = "https://kubernetes.default.svc"


def _ssh_url(https_url: str) -> str:
    host, _, path = https_url.split("://", 1)[1].partition("/")
    return f"ssh://git@{host}/{path}"


def _derived(domain: str) -> dict[str, str]:
    """The values a domain gives when they were not chosen separately."""
    return {
        "labelDomain": f"llm.{domain}",
        "contact": f"platform@{domain}",
        "issuer": f"https://auth.{domain}/",
        "jwksUrl": f"https://auth.{domain}/.well-known/jwks.json",
    }


def _host(name: str, domain: str, is_last: bool) -> str:
    return f"llm.{domain}" if is_last else f"llm.{name}.{domain}"


def _parse_envs(specs: list[str], current: list[Any], domain: str) -> list[dict[str, str]]:
    """--env NAME[=NAMESPACE][@CLUSTER] in promotion order; what a spec leaves out keeps the existing
    env of that name (namespace, cluster), else llm-NAME on the cluster Argo CD runs in."""
    existing = {str(e["name"]): e for e in current}
    envs = []
    for i, spec in enumerate(specs):
        head, _, cluster = spec.partition("@")
        name, _, namespace = head.partition("=")
        old = existing.get(name, {})
        envs.append(
            {
                "name": name,
                "namespace": namespace or str(old.get("namespace", f"llm-{name}")),
                "cluster": cluster or str(old.get("cluster", IN_CLUSTER)),
                "host": _host(name, domain, i == len(specs) - 1),
            }
        )
    return envs


def apply_flags(data: Any, args: argparse.Namespace) -> None:
    """Set the flags' values in platform.yaml's (round-trip) data. A value derived from the domain or the
    git URL follows a new one only while it still is the derived value (a chosen issuer stays)."""
    old_domain = str(data["labelDomain"]).removeprefix("llm.")
    domain = args.domain or old_domain
    if args.git_url and not args.git_url.startswith(("https://", "http://")):
        raise UsageError(
            f"--git-url {args.git_url!r}: give the https URL Argo CD reads (the ssh form goes to --git-ssh-url)"
        )
    if args.model_revision and (args.model_id or data["model"]["id"]) == data["model"]["id"]:
        # The revision of the model the organisation already serves is a model release (app/model.yaml).
        raise UsageError(
            "--model-revision goes with a new --model-id; to ship another revision of "
            f"{data['model']['id']}, edit app/model.yaml's revision (a model release: eval, promote)"
        )
    if args.org:
        data["organisation"] = args.org
    if args.registry:
        data["registry"] = args.registry
    if args.git_url:
        if data["git"]["sshUrl"] == _ssh_url(data["git"]["url"]):
            data["git"]["sshUrl"] = _ssh_url(args.git_url)
        if data["homepage"] == str(data["git"]["url"]).removesuffix(".git"):
            data["homepage"] = args.git_url.removesuffix(".git")
        data["git"]["url"] = args.git_url
    if args.domain:
        old, new = _derived(old_domain), _derived(domain)
        for key, where in (("labelDomain", data), ("contact", data), ("issuer", data["idp"]), ("jwksUrl", data["idp"])):
            if where[key] == old[key]:
                where[key] = new[key]
        last = len(data["environments"]) - 1
        for i, env in enumerate(data["environments"]):
            if env["host"] == _host(str(env["name"]), old_domain, i == last):
                env["host"] = _host(str(env["name"]), domain, i == last)
    plain = (
        ("git_ssh_url", data["git"], "sshUrl"),
        ("branch", data["git"], "branch"),
        ("homepage", data, "homepage"),
        ("label_domain", data, "labelDomain"),
        ("contact", data, "contact"),
        ("audience", data["idp"], "audience"),
        ("model_id", data["model"], "id"),
        ("model_revision", data["model"], "revision"),
        ("served_model_name", data["model"], "servedName"),
        ("gpu_pool_label", data["nodes"], "gpuPoolLabel"),
        ("spot_label", data["nodes"], "spotLabel"),
        ("spot_taint", data["nodes"], "spotTaint"),
    )
    for flag, where, key in plain:
        if getattr(args, flag):
            where[key] = getattr(args, flag)
    if args.issuer:
        if data["idp"]["jwksUrl"] == str(data["idp"]["issuer"]).rstrip("/") + "/.well-known/jwks.json":
            data["idp"]["jwksUrl"] = args.issuer.rstrip("/") + "/.well-known/jwks.json"
        data["idp"]["issuer"] = args.issuer
    if args.jwks_url:
        data["idp"]["jwksUrl"] = args.jwks_url
    if args.env:
        data["environments"] = _parse_envs(args.env, list(data["environments"]), domain)


def read_only(args: argparse.Namespace) -> bool:
    """init never keeps a run directory: its output is platform.yaml and the files derived from it."""
    return True


def _lines(lines: list[str], *, stderr: bool = False) -> Callable[[Console], None]:
    def render(console: Console) -> None:
        target = Console(stderr=True) if stderr else console
        for line in lines:
            target.print(line, markup=False, highlight=False, soft_wrap=True)

    return render


def main(args: argparse.Namespace, ctx: RunContext) -> CommandResult:
    root = ctx.repo_root
    path = root / PLATFORM_FILE
    given = [f"--{f.replace('_', '-')}" for f in VALUE_FLAGS if getattr(args, f)]
    if (args.check or args.apply) and given:
        mode = "--check" if args.check else "--apply"
        raise UsageError(f"{mode} reads platform.yaml as it is; it takes none of {', '.join(given)}")
    try:
        if args.check:
            platform = load_platform(root)
            changes = derive(root, platform, {e: e for e in platform.env_names})
            data = {"agrees": not changes, "files": [{"path": c.path, "diff": c.diff} for c in changes]}
            if not changes:
                return CommandResult(
                    data, ExitCode.OK, _lines([f"platform: every derived file agrees with {PLATFORM_FILE}"])
                )
            head = (
                f"platform: {len(changes)} file(s) disagree with {PLATFORM_FILE} (fix: python -m pipeline init --apply)"
            )
            return CommandResult(data, ExitCode.REFUSED, _lines([head, *(c.diff.rstrip() for c in changes)]))
        if not path.exists():
            raise PlatformError(
                f"{path} is missing: `git checkout platform.yaml` restores the example, then run init with your values"
            )
        if args.apply:
            platform = load_platform(root)
            new_text = None
        else:
            rt = round_trip_yaml()
            data = rt.load(path.read_text())
            apply_flags(data, args)
            buf = io.StringIO()
            rt.dump(data, buf)
            new_text = buf.getvalue()
            platform = parse_platform(new_text, str(path))
        applied = apply(root, platform, new_text)
    except (PlatformError, ApplyError) as exc:
        raise UsageError(str(exc)) from exc
    lines = [f"renamed env {old} → {new}" for old, new in applied.renamed.items()]
    lines += [f"updated {rel}" for rel in applied.changed]
    lines.append(f"platform: {len(applied.changed)} derived file(s) updated from {PLATFORM_FILE}")
    return CommandResult({"renamed": applied.renamed, "changed": applied.changed}, ExitCode.OK, _lines(lines))
