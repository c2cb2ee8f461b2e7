"""Copy generated Markdown into README.md between include markers, so that no measured number in the
README is typed by hand:

    <!-- include: results/bench/table.md -->
    ...generated content, replaced on every run...
    <!-- end include -->

    python results/sync_readme.py          # rewrite README.md from the generated files
    python results/sync_readme.py --check  # exit 1 if README.md is out of date (the tests run this)
"""
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(<!-- include: (?P<path>\S+) -->\n)(?P<body>.*?)(<!-- end include -->)", re.S)


def render(readme: str) -> str:
    def fill(m):
        src = ROOT / m.group("path")
        if not src.exists():
            raise FileNotFoundError(f"README.md includes {m.group('path')}, which does not exist; "
                                    "run the script that generates it (see the README section)")
        return m.group(1) + src.read_text().rstrip("\n") + "\n" + m.group(4)
    return BLOCK.sub(fill, readme)


def main(argv):
    readme_path = ROOT / "README.md"
    old = readme_path.read_text()
    new = render(old)
    if "--check" in argv:
        if new != old:
            sys.exit("README.md is out of date with the generated results: run python results/sync_readme.py")
        print("README.md includes are up to date")
        return
    readme_path.write_text(new)
    print(f"updated {len(BLOCK.findall(old))} include blocks in README.md")


if __name__ == "__main__":
    main(sys.argv[1:])
