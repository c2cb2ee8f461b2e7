"""Tests of the classroom exercises (exercises/, issue 9).

Every exercise's check passes on its reference solution and fails, with the "not implemented yet"
message, on its pristine stub; wrong answers get a message rather than a crash; reset.py restores
edited files without git; stubs, solutions and the checks' oracles stay in sync.
"""
import ast
import filecmp
import importlib.util
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
EX = ROOT / "exercises"
STUBS = sorted((EX / "stubs").glob("ex[0-9][0-9]_*.py"))
NUMBERS = [int(p.name[2:4]) for p in STUBS]


def run(*args, exercise_dir=None):
    """Run a script under exercises/ the way a student would, from the repo root."""
    env = {k: v for k, v in os.environ.items() if k != "REVGPT_EXERCISE_DIR"}
    if exercise_dir is not None:
        env["REVGPT_EXERCISE_DIR"] = str(exercise_dir)
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def result_line(proc, n):
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith((f"PASS ex{n:02d}:", f"FAIL ex{n:02d}:"))]
    assert len(lines) == 1, f"no result line for ex{n:02d}:\n{proc.stdout}\n{proc.stderr}"
    return lines[0]


def load(path):
    spec = importlib.util.spec_from_file_location(f"_t_{path.parent.name}_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def on_solutions():
    return run(EX / "check.py", "all", "--solutions")


@pytest.fixture(scope="module")
def on_stubs():  # selected through the environment variable
    return run(EX / "check.py", "all", exercise_dir=EX / "stubs")


def test_at_least_eight_exercises_each_with_stub_working_copy_and_solution():
    assert len(NUMBERS) >= 8 and NUMBERS == list(range(1, len(NUMBERS) + 1))
    for stub in STUBS:
        assert (EX / "solutions" / stub.name).exists(), f"no reference solution for {stub.name}"
        assert (EX / stub.name).exists(), f"no working copy exercises/{stub.name} (python exercises/reset.py)"


@pytest.mark.parametrize("n", NUMBERS)
def test_check_passes_on_reference_solution(on_solutions, n):
    assert result_line(on_solutions, n).startswith(f"PASS ex{n:02d}:"), on_solutions.stdout


def test_all_solutions_exit_zero(on_solutions):
    assert on_solutions.returncode == 0, on_solutions.stdout + on_solutions.stderr
    assert f"{len(NUMBERS)}/{len(NUMBERS)} passed" in on_solutions.stdout


@pytest.mark.parametrize("n", NUMBERS)
def test_check_fails_on_pristine_stub_with_helpful_message(on_stubs, n):
    line = result_line(on_stubs, n)
    assert line.startswith(f"FAIL ex{n:02d}: ") and "is not implemented yet" in line, line
    assert f"stubs/{STUBS[n - 1].name}" in line  # names the file to edit ...
    assert f"exercise {n} in exercises/README.md" in line  # ... and where the hint is


def test_all_stubs_exit_nonzero(on_stubs):
    assert on_stubs.returncode == 1 and "0/" in on_stubs.stdout


def test_single_exercise_with_the_stubs_flag():
    out = run(EX / "check.py", "3", "--stubs")
    assert out.returncode == 1 and out.stdout.count("FAIL") == 1 and "PASS" not in out.stdout
    assert "FAIL ex03: integrate is not implemented yet (in exercises/stubs/ex03_integrate.py)" in out.stdout


@pytest.mark.parametrize("argv", [["42"], ["one"], ["1", "--solutions", "--stubs"]])
def test_bad_command_lines_are_refused(argv, capsys):
    with pytest.raises(SystemExit) as e:
        load(EX / "check.py").main(argv)
    assert e.value.code == 2 and "error" in capsys.readouterr().err


def test_wrong_answers_get_a_message_not_a_crash(tmp_path):
    shutil.copy(EX / "stubs" / STUBS[0].name, tmp_path)
    wrong = (EX / "solutions" / STUBS[0].name).read_text().replace("(z - (1 - a) * y - 2 * h * fy) / a",
                                                                   "(z - (1 - a) * y - h * fy) / a")
    assert wrong != (EX / "solutions" / STUBS[0].name).read_text()
    (tmp_path / STUBS[0].name).write_text(wrong)
    (tmp_path / STUBS[2].name).write_text("def integrate(steps, x, y):\n    return x + y\n")  # not a pair
    (tmp_path / STUBS[5].name).write_text("def step_backward(:\n")  # a syntax error
    out = run(EX / "check.py", "1", "3", "6", "--dir", tmp_path)
    assert out.returncode == 1
    assert "FAIL ex01: midpoint_inverse(z, y, fy, a=1.0, h=0.5): relative error" in result_line(out, 1)
    assert "FAIL ex03: integrate must return a pair (x, y)" in result_line(out, 3)
    assert "FAIL ex06: could not import" in result_line(out, 6) and "SyntaxError" in result_line(out, 6)


def test_reset_restores_edited_and_deleted_files_without_git(tmp_path):
    work = tmp_path / "exercises"  # a copy of the folder, as a teacher would have it (no .git)
    shutil.copytree(EX, work, ignore=shutil.ignore_patterns("backup", "__pycache__"))
    edited, deleted = work / STUBS[2].name, work / STUBS[4].name
    edited.write_text(edited.read_text() + "\n# a student's work\n")
    deleted.unlink()
    check = subprocess.run([sys.executable, work / "reset.py", "--check"], capture_output=True, text=True)
    assert check.returncode == 1 and "differs" in check.stdout and "is missing" in check.stdout
    reset = subprocess.run([sys.executable, work / "reset.py"], capture_output=True, text=True)
    assert reset.returncode == 0, reset.stderr
    for stub in STUBS:
        assert filecmp.cmp(work / "stubs" / stub.name, work / stub.name, shallow=False)
    backups = list((work / "backup").glob(f"*/{edited.name}"))
    assert len(backups) == 1 and "# a student's work" in backups[0].read_text()
    again = subprocess.run([sys.executable, work / "reset.py", "--check"], capture_output=True, text=True)
    assert again.returncode == 0


def _functions(path):
    tree = ast.parse(path.read_text())
    funcs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    return ast.get_docstring(tree), funcs


@pytest.mark.parametrize("stub", STUBS, ids=[s.name for s in STUBS])
def test_stub_and_solution_agree(stub):
    """Same task text, same functions and signatures, identical GIVEN helpers; the stub leaves every
    task unimplemented and the solution none."""
    sol = EX / "solutions" / stub.name
    doc_stub, f_stub = _functions(stub)
    doc_sol, f_sol = _functions(sol)
    assert doc_stub == doc_sol and "Check: python exercises/check.py" in doc_stub
    assert set(f_stub) <= set(f_sol)
    for name, node in f_stub.items():
        assert ast.dump(node.args) == ast.dump(f_sol[name].args), name
        assert ast.get_docstring(node) == ast.get_docstring(f_sol[name]), name
        if (ast.get_docstring(node) or "").startswith("GIVEN"):
            assert ast.dump(node) == ast.dump(f_sol[name]), f"{name} is GIVEN: it must be identical"
        else:
            assert "NotImplementedError" in ast.unparse(node), f"stub {name} should raise NotImplementedError"
    assert "NotImplementedError" not in sol.read_text().split('"""', 2)[2]


def test_checks_oracle_copies_match_the_given_helpers():
    """check.py keeps its own copies of the stubs' GIVEN model builders (so that editing a stub cannot
    move the oracle); they must build the same models and batches."""
    check = load(EX / "check.py")
    ex05, ex09 = load(EX / "stubs" / STUBS[4].name), load(EX / "stubs" / STUBS[8].name)
    for a, L in ((0.5, 3), (1.0, 1)):
        mine, theirs = check._make_model_05(a, L).state_dict(), ex05.make_model(a, L).state_dict()
        assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert torch.equal(check._batch_05(), ex05.make_batch())
    for L in (1, 3):
        mine, theirs = check._make_euler_09(L).state_dict(), ex09.make_euler_model(L).state_dict()
        assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert torch.equal(check._batch_09(), ex09.make_batch())


def test_readme_documents_every_exercise():
    text = (EX / "README.md").read_text()
    for n, stub in zip(NUMBERS, STUBS):
        assert f"python exercises/check.py {n}" in text, n
        assert stub.name in text, stub.name
    for needle in ("python exercises/reset.py", "--solutions", "REVGPT_EXERCISE_DIR"):
        assert needle in text


def test_readme_code_references_exist():
    """Names in `code` in exercises/README.md that belong to revgpt.py must exist there (a renamed
    function would otherwise leave the hints pointing at nothing)."""
    import re
    sys.path.insert(0, str(ROOT))
    import revgpt
    text = (EX / "README.md").read_text()
    checked = 0
    for token in re.findall(r"`([^`\s]+)`", text):
        m = re.fullmatch(r"(revgpt\.)?([A-Za-z_]\w*)((?:\.\w+)*)(\(\))?", token)
        if token == "revgpt.py" or not m or not (m.group(1) or hasattr(revgpt, m.group(2))):
            continue  # not a revgpt name (a variable, a torch function, another file's name)
        if isinstance(getattr(revgpt, m.group(2), None), types.ModuleType):
            continue  # torch.something: revgpt imports torch, but these are torch's names
        obj = revgpt
        for part in [m.group(2)] + [p for p in m.group(3).split(".") if p]:
            assert hasattr(obj, part), f"exercises/README.md mentions `{token}`, which revgpt.py does not have"
            obj = getattr(obj, part)
        checked += 1
    assert checked >= 15
    for ref in re.findall(r"tests/(test_\w+\.py)::(\w+)", text):
        assert f"def {ref[1]}(" in (ROOT / "tests" / ref[0]).read_text(), ref
