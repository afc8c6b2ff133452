"""The ``llmlab`` command: manage the model store.

llmlab models pull smollm2-135m       fetch, verify and store a known model
llmlab models list                    what the store holds (name, size, path)
llmlab models list --endpoint URL     what an OpenAI-compatible server offers
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import httpx

from pytest_llmlab.errors import LLMLabError
from pytest_llmlab.models.openai import connect_reason, is_loopback, redact_url
from pytest_llmlab.models.store import KNOWN_MODELS, list_stored, pull, store_home

__all__ = ["main"]


def _size(num_bytes: int) -> str:
    return f"{num_bytes / 1e6:.1f} MB"


def _pull(args: argparse.Namespace) -> int:
    for name in args.names:
        path = pull(name, force=args.force, announce=lambda m: print(m, file=sys.stderr))
        print(f"{name}\t{_size(path.stat().st_size)}\t{path}")
    return 0


def _endpoint_models(base: str) -> list[str]:
    """Model ids from ``GET {base}/models``; ValueError with a one-line reason."""
    # A proxy set for the internet must not swallow a loopback server.
    with httpx.Client(timeout=10.0, trust_env=not is_loopback(base)) as client:
        try:
            response = client.get(f"{base}/models")
        except httpx.HTTPError as exc:
            raise ValueError(connect_reason(exc)) from None
    if response.status_code >= 400:
        raise ValueError(f"HTTP {response.status_code} {response.reason_phrase}")
    try:
        data = response.json().get("data")
    except (ValueError, AttributeError):
        raise ValueError("the answer is not an OpenAI model list") from None
    if not isinstance(data, list):
        raise ValueError("the answer has no 'data' list")
    return [str(entry.get("id")) for entry in data if isinstance(entry, dict)]


def _list_endpoint(url: str) -> int:
    base = url.rstrip("/")
    try:
        models = _endpoint_models(base)
    except ValueError as exc:
        print(f"llmlab: cannot list models at {redact_url(base)}: {exc}", file=sys.stderr)
        return 1
    for model in models:
        print(model)
    return 0


def _list(args: argparse.Namespace) -> int:
    if args.endpoint:
        return _list_endpoint(args.endpoint)
    stored = list_stored()
    if not stored:
        known = ", ".join(sorted(KNOWN_MODELS))
        print(f"no models in {store_home()} (pull one of: {known})", file=sys.stderr)
        return 0
    for model in stored:
        print(f"{model.name}\t{_size(model.size_bytes)}\t{model.path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmlab", description="pytest-llmlab tools")
    commands = parser.add_subparsers(dest="command", required=True)
    models = commands.add_parser("models", help="the local model store ($LLMLAB_HOME)")
    actions = models.add_subparsers(dest="action", required=True)
    pull_cmd = actions.add_parser("pull", help="fetch and verify a known model")
    pull_cmd.add_argument("names", nargs="+", choices=sorted(KNOWN_MODELS), metavar="NAME")
    pull_cmd.add_argument("--force", action="store_true", help="fetch again even if stored")
    pull_cmd.set_defaults(func=_pull)
    list_cmd = actions.add_parser("list", help="list stored models, or an endpoint's")
    list_cmd.add_argument("--endpoint", metavar="URL", help="an OpenAI-compatible base URL")
    list_cmd.set_defaults(func=_list)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except LLMLabError as exc:
        print(f"llmlab: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
