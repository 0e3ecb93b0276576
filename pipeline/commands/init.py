"""`python -m pipeline init`: write platform.yaml for an organisation and derive the tree from it.

    init --org acme --registry registry.acme.dev/ml --git-url https://git.acme.dev/ml/llm.git --domain acme.dev
    init --check     every derived file agrees with platform.yaml (exit 1 lists each difference)
    init --apply     rewrite the derived files after editing platform.yaml by hand

Values not given keep platform.yaml's, except those derived from a given one (a new --domain
gives new hosts, IdP URLs and label domain unless those are given too)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from pipeline.core.context import RunContext
from pipeline.core.exit_codes import ExitCode
from pipeline.core.platform import PLATFORM_FILE, PlatformError, load_platform, parse_platform
from pipeline.core.result import CommandResult
from pipeline.platform_config.apply import ApplyError, apply
from pipeline.platform_config.derived import derive

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
    parser.add_argument("--model-revision", metavar="SHA", help="the model's 40-hex commit")
    parser.add_argument("--served-model-name", metavar="NAME", help="model name clients request")
    parser.add_argument("--gpu-pool-label", metavar="KEY", help="node label naming an env's GPU pool")
    parser.add_argument("--spot-label", metavar="KEY", help="node label (value spot) of spot GPU nodes")
    parser.add_argument("--spot-taint", metavar="KEY", help="taint (value true) of spot GPU nodes")
    parser.add_argument(
        "--env",
        action="append",
        metavar="NAME[=NAMESPACE][@CLUSTER]",
        help="an environment, in promotion order (repeat; default: platform.yaml's). Namespace default llm-NAME",
    )


def _ssh_url(https_url: str) -> str:
    host, _, path = https_url.split("://", 1)[1].partition("/")
    return f"ssh://git@{host}/{path}"


def _parse_env(spec: str, domain: str, is_last: bool, cluster_default: str) -> dict[str, str]:
    name, _, rest = spec.partition("=")
    namespace, _, cluster = rest.partition("@") if rest else ("", "", "")
    if "@" in name:
        name, _, cluster = name.partition("@")
    return {
        "name": name,
        "namespace": namespace or f"llm-{name}",
        "cluster": cluster or cluster_default,
        "host": f"llm.{domain}" if is_last else f"llm.{name}.{domain}",
    }


def new_platform(current: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """platform.yaml's data with the flags applied (derived values follow the values they come from)."""
    data: dict[str, Any] = yaml.safe_load(yaml.safe_dump(current))
    old_domain = data["labelDomain"].removeprefix("llm.")
    domain = args.domain or old_domain
    if args.org:
        data["organisation"] = args.org
    if args.registry:
        data["registry"] = args.registry
    if args.git_url:
        data["git"]["url"] = args.git_url
        data["git"]["sshUrl"] = args.git_ssh_url or _ssh_url(args.git_url)
        data["homepage"] = args.homepage or args.git_url.removesuffix(".git")
    if args.git_ssh_url:
        data["git"]["sshUrl"] = args.git_ssh_url
    if args.branch:
        data["git"]["branch"] = args.branch
    if args.homepage:
        data["homepage"] = args.homepage
    if args.domain:
        data["labelDomain"] = f"llm.{domain}"
        data["contact"] = f"platform@{domain}"
        data["idp"]["issuer"] = f"https://auth.{domain}/"
        data["idp"]["jwksUrl"] = f"https://auth.{domain}/.well-known/jwks.json"
    for flag, key in (("label_domain", "labelDomain"), ("contact", "contact")):
        if getattr(args, flag):
            data[key] = getattr(args, flag)
    if args.issuer:
        data["idp"]["issuer"] = args.issuer
        data["idp"]["jwksUrl"] = args.issuer.rstrip("/") + "/.well-known/jwks.json"
    if args.jwks_url:
        data["idp"]["jwksUrl"] = args.jwks_url
    if args.audience:
        data["idp"]["audience"] = args.audience
    for flag, key in (("model_id", "id"), ("model_revision", "revision"), ("served_model_name", "servedName")):
        if getattr(args, flag):
            data["model"][key] = getattr(args, flag)
    for flag, key in (("gpu_pool_label", "gpuPoolLabel"), ("spot_label", "spotLabel"), ("spot_taint", "spotTaint")):
        if getattr(args, flag):
            data["nodes"][key] = getattr(args, flag)
    cluster_default = data["environments"][0].get("cluster", "https://kubernetes.default.svc")
    if args.env:
        data["environments"] = [
            _parse_env(spec, domain, i == len(args.env) - 1, cluster_default) for i, spec in enumerate(args.env)
        ]
    elif args.domain:
        last = len(data["environments"]) - 1
        for i, env in enumerate(data["environments"]):
            env["host"] = f"llm.{domain}" if i == last else f"llm.{env['name']}.{domain}"
    return data


def _header(text: str) -> str:
    """platform.yaml's leading comment block (kept when init rewrites the file)."""
    lines = []
    for line in text.splitlines(keepends=True):
        if not line.startswith("#"):
            break
        lines.append(line)
    return "".join(lines)


def read_only(args: argparse.Namespace) -> bool:
    """`init --check` writes nothing (no run directory either)."""
    return bool(args.check)


def _lines(lines: list[str]) -> Callable[[Console], None]:
    def render(console: Console) -> None:
        for line in lines:
            console.print(line, markup=False, highlight=False, soft_wrap=True)

    return render


def main(args: argparse.Namespace, ctx: RunContext) -> CommandResult:
    root = Path.cwd()
    path = root / PLATFORM_FILE
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
        text = path.read_text() if path.exists() else ""
        if args.apply:
            platform = load_platform(root)
            new_text = None
        else:
            current = yaml.safe_load(text) if text else None
            if current is None:
                raise PlatformError(f"{path} is missing: restore it from the repository first")
            new_text = _header(text) + yaml.safe_dump(new_platform(current, args), sort_keys=False, allow_unicode=True)
            platform = parse_platform(new_text)
        applied = apply(root, platform, new_text)
    except (PlatformError, ApplyError) as exc:
        return CommandResult({"error": str(exc)}, ExitCode.USAGE, _lines([f"init: {exc}"]))
    lines = [f"renamed env {old} → {new}" for old, new in applied.renamed.items()]
    lines += [f"updated {rel}" for rel in applied.changed]
    lines.append(f"platform: {len(applied.changed)} derived file(s) updated from {PLATFORM_FILE}")
    return CommandResult({"renamed": applied.renamed, "changed": applied.changed}, ExitCode.OK, _lines(lines))
