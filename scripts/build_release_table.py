"""Rebuild saesteer/sae/formats/releases.json.gz, the SAELens release table saesteer ships for installs
without sae-lens, from the installed sae-lens's pretrained_saes.yaml.

    python scripts/build_release_table.py
"""

from __future__ import annotations

import importlib.metadata

from saesteer.sae.formats import releases


def main() -> None:
    y = releases.sae_lens_yaml()
    if y is None:
        raise SystemExit("sae-lens is not installed: pip install sae-lens")
    t = releases.table_from_yaml(y)
    version = importlib.metadata.version("sae-lens")
    out = releases.write_table(t, releases.SHIPPED, f"sae-lens {version} pretrained_saes.yaml (shipped table)")
    n = sum(len(r["saes"]) for r in t.values())
    print(f"{len(t)} releases, {n} SAEs from sae-lens {version} -> {out} ({out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
