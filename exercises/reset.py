"""
Reset the exercise files to their pristine stubs (for teachers, or a student starting over).

    python exercises/reset.py            # every exercise
    python exercises/reset.py 3 5        # only exercises 3 and 5
    python exercises/reset.py --check    # list the exercise files that differ from their stubs

Students edit exercises/exNN_*.py; the pristine copies live in exercises/stubs/ and are never edited.
Before a changed file is overwritten it is copied to exercises/backup/<date-time>/, so no work is
lost. Needs neither git nor torch.
"""
import argparse
import filecmp
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
STUBS = HERE / "stubs"


def stubs():
    """{exercise number: pristine stub path}, from the file names exNN_*.py."""
    found = {int(p.name[2:4]): p for p in sorted(STUBS.glob("ex[0-9][0-9]_*.py"))}
    if not found:
        sys.exit(f"reset: no stubs found in {STUBS}")
    return found


def main(argv=None):
    p = argparse.ArgumentParser(description="Restore the exercise files from exercises/stubs/.")
    p.add_argument("exercises", nargs="*", type=int, help="exercise numbers (default: all)")
    p.add_argument("--check", action="store_true", help="only list the files that differ; exit 1 if any")
    args = p.parse_args(argv)
    all_stubs = stubs()
    bad = [n for n in args.exercises if n not in all_stubs]
    if bad:
        p.error(f"no exercise {bad[0]}: there are {min(all_stubs)}-{max(all_stubs)}")
    chosen = {n: all_stubs[n] for n in (args.exercises or all_stubs)}

    changed = [n for n, stub in chosen.items()
               if not (HERE / stub.name).exists() or not filecmp.cmp(stub, HERE / stub.name, shallow=False)]
    if args.check:
        for n in changed:
            state = "differs from its stub" if (HERE / chosen[n].name).exists() else "is missing"
            print(f"exercises/{chosen[n].name} {state}")
        print(f"{len(changed)} of {len(chosen)} exercise files differ from their stubs")
        return 1 if changed else 0

    backup = HERE / "backup" / time.strftime("%Y%m%d-%H%M%S")
    for n in changed:
        work = HERE / chosen[n].name
        if work.exists():  # keep the student's version before overwriting it
            backup.mkdir(parents=True, exist_ok=True)
            shutil.copy2(work, backup / work.name)
        shutil.copyfile(chosen[n], work)
        print(f"reset exercises/{work.name}")
    if changed and backup.exists():
        print(f"the previous versions are in {backup.relative_to(HERE.parent)}/")
    print(f"{len(changed)} file(s) reset, {len(chosen) - len(changed)} already pristine")
    return 0


if __name__ == "__main__":
    sys.exit(main())
