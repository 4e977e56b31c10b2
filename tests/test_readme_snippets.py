"""README's offline Python snippets run exactly as printed, and the values their comments claim
(``# tensor([...])``, ``# ['Coin']``) are what the code gives. Snippets that need a hub model
(llava-hf, openai/clip, your own SAE path) are not run here: nothing may be downloaded in tests."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import torch

import saesteer

pytestmark = pytest.mark.real
README = (Path(__file__).parents[1] / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)


def _block(first_line: str) -> str:
    hits = [b for b in BLOCKS if b.lstrip().startswith(first_line)]
    assert len(hits) == 1, f"README has {len(hits)} python blocks starting with {first_line!r}"
    return hits[0]


def _claims(code: str) -> list[tuple[str, str]]:
    """(expression, claimed value) of every line whose comment starts with a tensor or a list."""
    out = []
    for line in code.splitlines():
        expr, _, comment = line.partition("#")
        comment = comment.strip()
        if expr.strip() and re.match(r"^(tensor\(\[|\[')", comment):
            out.append((expr.strip(), comment))
    return out


def _run(code: str, env: dict) -> None:
    exec(compile(code, "README.md", "exec"), env)  # noqa: S102 - our own README
    for expr, claim in _claims(code):
        got = eval(compile(expr, "README.md", "eval"), env)  # noqa: S307 - our own README
        t = re.match(r"^tensor\(\[([^\]]*)\]\)", claim)
        if t:
            want = torch.tensor([float(v) for v in t.group(1).split(",")])
            torch.testing.assert_close(got.float().cpu(), want, atol=2e-3, rtol=0, msg=expr)
        else:
            want = ast.literal_eval(re.match(r"^(\[.*?\])", claim).group(1))
            assert got == want, (expr, got, want)


def test_features_snippet():
    env = {"saesteer": saesteer}
    _run(_block("sm, tok = saesteer.embedded.load_default()"), env)
    assert env["sm"].sae.labels.search("python def")


def test_tiny_llava_snippet():
    code = _block("import PIL.Image, torch")
    assert len(_claims(code)) == 2  # ['Coin'] unsteered, ['Vehicle'] with feature 273 clamped
    _run(code, {})


def test_demo_reward_snippets_and_the_reweighting_that_flips_the_preference():
    env = {"saesteer": saesteer}
    code = _block("rm = saesteer.reward.load_demo()")
    assert len(_claims(code)) == 1
    _run(code, env)
    _run(_block("print(rm.explain_preference("), env)
    _run(_block("rm.reweight({4518: 0.0}, copy=True)"), env)
