"""saesteer against sae-lens's own loader, one SAE family at a time (the figures the README quotes).

For each family this writes small random files in the family's exact hub layout into a temp dir,
loads them with sae-lens's loader for that family (its ``hf_hub_download`` pointed at the files) and
builds sae-lens's SAE as ``SAE.from_pretrained`` does, loads the same files with
``saesteer.load_sae``, and prints the max |difference| of encode and of decode on random fp32 inputs
(tests/family_files.py holds the layouts; tests/test_parity_families.py asserts the same at 1e-5).

    python scripts/sae_family_parity.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

import family_files as ff  # noqa: E402


def main() -> None:
    import importlib.metadata

    print(f"sae-lens {importlib.metadata.version('sae-lens')}, fp32, 256 random inputs per family")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (family, variant) in enumerate(ff.PARITY):
            case = ff.write(family, Path(tmp) / str(i), variant)
            r = ff.compare(case)
            same = r["hook"] == r["hook_sae_lens"]
            rows.append((f"{family}{'/' + variant if variant else ''}", case.layout, r["encode"], r["decode"],
                         r["active"], r["hook"] + ("" if same else f" (sae-lens: {r['hook_sae_lens']})")))
    print("family | file layout | max |encode diff| | max |decode diff| | features active | hook (both)")
    for name, layout, enc, dec, active, hook in rows:
        print(f"{name} | {layout} | {enc:.2e} | {dec:.2e} | {active:.3f} | {hook}")


if __name__ == "__main__":
    main()
