"""The README's generated blocks match the files the scripts wrote, and the docs name only code that exists."""
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "results"))
import sync_readme  # noqa: E402
import revgpt  # noqa: E402


def test_readme_includes_are_up_to_date():
    readme = (ROOT / "README.md").read_text()
    blocks = sync_readme.BLOCK.findall(readme)
    assert blocks, "README.md has no generated blocks"
    assert sync_readme.render(readme) == readme, "README.md is stale: run python results/sync_readme.py"


def test_sync_check_detects_a_hand_edit(tmp_path, monkeypatch):
    (tmp_path / "gen.md").write_text("| a | 1 |\n")
    (tmp_path / "README.md").write_text("x\n<!-- include: gen.md -->\n| a | 2 |\n<!-- end include -->\n")
    monkeypatch.setattr(sync_readme, "ROOT", tmp_path)
    with pytest.raises(SystemExit, match="out of date"):
        sync_readme.main(["--check"])
    sync_readme.main([])
    assert "| a | 1 |" in (tmp_path / "README.md").read_text()
    sync_readme.main(["--check"])


IDENT = re.compile(r"`((?:revgpt\.)?[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?)`")
# backticked words in the walkthrough that are not revgpt code: math symbols, torch names, files
NOT_CODE = {"f", "g", "l", "p", "f_l", "p_l", "y_L", "forward", "backward", "euler", "code",
            "Function.forward", "ctx.save_for_backward"}


def resolve(name):
    obj = revgpt
    for attr in name.removeprefix("revgpt.").split("."):
        if not hasattr(obj, attr):
            return False
        obj = getattr(obj, attr)
    return True


def test_walkthrough_code_references_exist():
    """Every backticked identifier in the walkthrough is revgpt code (checked to exist) or a known word."""
    names = {n for n in IDENT.findall((ROOT / "docs/walkthrough.md").read_text())
             if not n.endswith((".py", ".md")) and n not in NOT_CODE}
    missing = sorted(n for n in names if not resolve(n))
    assert not missing, f"docs/walkthrough.md names {missing}, which revgpt.py does not define"
    assert len(names) >= 10


def test_readme_revgpt_references_exist():
    names = {n for n in IDENT.findall((ROOT / "README.md").read_text()) if n.startswith("revgpt.") and not n.endswith(".py")}
    missing = sorted(n for n in names if not resolve(n))
    assert names and not missing, f"README.md names {missing}, which revgpt.py does not define"
