"""The command line of each agent's own identity: ``gigafab agent --enrol``'s flags and renewal,
``gigafab enrol`` and ``gigafab signer`` (``agents.identity``).

Like ``agents.cli``, it imports at start only what parsing needs: the agent process loads it too.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from gigafab.agents.agent import Agent

COMMANDS = ("enrol", "signer")
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
"""Where the kubelet mounts a pod's ServiceAccount token (bound to the pod and its node, renewed hourly)
and the apiserver's CA."""


def enrolment_flags(agent: argparse.ArgumentParser) -> None:
    """``gigafab agent``'s flags for getting its own certificate."""
    agent.add_argument(
        "--enrol",
        action="store_true",
        help="get this node's certificate from the gigafab signer (a CertificateSigningRequest made with the pod's "
        "ServiceAccount token), write it with its key into --pki (a tmpfs) and renew it; one --node",
    )
    agent.add_argument("--ca", type=Path, help="CA certificate of the gateways (default: <pki>/ca.crt)")
    _apiserver_flags(agent)
    agent.add_argument(
        "--certificate-seconds", type=int, default=86400, help="with --enrol: lifetime to ask for (the signer may cap it)"
    )


def _apiserver_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--apiserver", help="https://HOST:PORT of the apiserver (default: in-cluster)")
    parser.add_argument("--token", type=Path, default=SERVICE_ACCOUNT / "token", help="the pod's ServiceAccount token")
    parser.add_argument("--apiserver-ca", type=Path, default=SERVICE_ACCOUNT / "ca.crt", help="CA of the apiserver")


def add_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    enrol = commands.add_parser(
        "enrol", help="get one node's certificate from the gigafab signer; prints key and certificate (what --enrol runs)"
    )
    enrol.add_argument("--node", required=True)
    enrol.add_argument("--site", required=True)
    _apiserver_flags(enrol)
    enrol.add_argument("--seconds", type=int, default=86400, help="lifetime to ask for (the signer may cap it)")
    enrol.add_argument("--wait", type=int, default=600, help="seconds to wait for the signer's answer")

    signer = commands.add_parser("signer", help="approve or deny, and sign, the agents' certificate requests")
    signer.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, else the pod's ServiceAccount)")
    signer.add_argument("--ca-cert", type=Path, required=True, help="the health plane's CA certificate (PEM)")
    signer.add_argument("--ca-key", type=Path, required=True, help="its private key")
    signer.add_argument(
        "--agents", required=True, help="NAMESPACE/NAME of the agents' ServiceAccount: only its tokens get certificates"
    )
    signer.add_argument("--max-seconds", type=int, default=86400, help="longest lifetime of a certificate (default a day)")
    signer.add_argument("--publish-ca", help="NAMESPACE/NAME of a ConfigMap to keep the CA certificate in (ca.crt)")


def run(args: argparse.Namespace) -> int | None:
    """Run ``enrol`` or ``signer`` (their exit code); for ``agent --enrol`` only check its arguments
    (2 when they cannot work, None when the agent may start)."""
    if args.command == "agent":
        if len(args.node) != 1:
            print("gigafab agent: --enrol gets one node's certificate: give exactly one --node", file=sys.stderr)
            return 2
        return None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if args.command == "enrol":
        from gigafab.agents import enrol

        try:
            apiserver = enrol.Apiserver(args.apiserver or enrol.Apiserver.in_cluster_url(), args.token, args.apiserver_ca)
        except enrol.EnrolmentFailed as failure:
            print(f"gigafab enrol: {failure}", file=sys.stderr)
            return 2
        return enrol.main(args.node, args.site, apiserver, args.seconds, args.wait)
    from gigafab.agents import signer

    return signer.main(args.kubeconfig, args.ca_cert, args.ca_key, args.agents, args.max_seconds, args.publish_ca)


def renewals(args: argparse.Namespace, agents: dict[str, Agent]) -> list[Coroutine[Any, Any, None]]:
    """With --enrol, the task that keeps the (one) agent's certificate fresh."""
    if not args.enrol:
        return []
    from gigafab.agents.renewal import Renewal

    ((node, agent),) = agents.items()
    command = [sys.executable, "-m", "gigafab", "enrol", f"--node={node}", f"--site={args.site}"]
    command += [f"--seconds={args.certificate_seconds}", f"--token={args.token}", f"--apiserver-ca={args.apiserver_ca}"]
    command += [f"--apiserver={args.apiserver}"] if args.apiserver else []
    return [Renewal(node, agent.tls, command).run()]
