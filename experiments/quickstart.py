"""
The quick start's numbers: `python train.py` with its defaults (midpoint), and the same with
--dynamics=euler, each timed as a whole (data preparation, evaluations and the sample included).

    python experiments/quickstart.py            # runs both, writes results/quickstart/quickstart.{json,md}
    python experiments/quickstart.py --report   # only rewrites quickstart.md from the JSON

Wall time depends on what else the machine is doing, so the JSON also records the CPU time the run
used and the load average around it.
"""
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RES = ROOT / "results" / "quickstart"
RUNS = {"midpoint (default)": [], "euler": ["--dynamics=euler"]}


def run(name, extra):
    out = ROOT / "out-experiments" / "quickstart" / name.split()[0]
    cmd = [sys.executable, "train.py", *extra, f"--out_dir={out}"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load0, t0 = os.getloadavg()[0], time.time()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.time() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    done = next(r for r in log if r["type"] == "done")
    sample = proc.stdout.split("-" * 80)[1].strip("\n") if proc.stdout.count("-" * 80) >= 2 else ""
    return {"command": "python train.py " + " ".join(extra), "wall_s": wall,
            "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            "load_avg_start": load0, "load_avg_end": os.getloadavg()[0], "cores": os.cpu_count(),
            "val_loss": done["val_loss"], "iters": done["iter_num"], "tokens": done["tokens_seen"], "sample": sample}


def environment():
    """What the measurement ran in: a fresh checkout is the point of the quick start."""
    cache = os.environ.get("TIKTOKEN_CACHE_DIR")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return {"git_commit": commit or None, "virtualenv": sys.prefix != sys.base_prefix, "python": sys.version.split()[0],
            "dataset_prepared_before": (ROOT / "data" / "shakespeare_char" / "train.bin").exists(),
            "shared_folder_beside_checkout": (ROOT.parent / "shared").exists(),
            "tiktoken_cache_dir": cache, "tiktoken_cache_files_before": len(os.listdir(cache)) if cache and
            os.path.isdir(cache) else None}


def main():
    RES.mkdir(parents=True, exist_ok=True)
    env = environment()
    results = {name: run(name, extra) for name, extra in RUNS.items()}
    results["environment"] = env
    (RES / "quickstart.json").write_text(json.dumps(results, indent=1))
    report(results)


def report(results):
    """results/quickstart/quickstart.md from the JSON."""
    env = results["environment"]
    lines = ["The default run and the same run with `--dynamics=euler`, each timed as a whole on this project's "
             "2-core CPU machine (`python experiments/quickstart.py` regenerates this):", "",
             "| run | command | final val loss (whole split) | wall time | CPU time | load average (start/end) |",
             "|---|---|---:|---:|---:|---:|"]
    for name, r in results.items():
        if name == "environment":
            continue
        lines.append(f"| {name} | `{r['command'].strip()}` | {r['val_loss']:.4f} | {r['wall_s'] / 60:.1f} min | "
                     f"{r['cpu_s'] / 60:.1f} min | {r['load_avg_start']:.1f} / {r['load_avg_end']:.1f} |")
    lines += ["", f"Environment: virtualenv {env['virtualenv']}, corpus prepared before the first run "
              f"{env['dataset_prepared_before']} (so its wall time includes the download and tokenization when False), "
              f"a ../shared folder beside the checkout {env['shared_folder_beside_checkout']}, TIKTOKEN_CACHE_DIR "
              f"{env['tiktoken_cache_dir']!r} holding {env['tiktoken_cache_files_before']} files, commit "
              f"{(env['git_commit'] or '?')[:7]}."]
    first = results["midpoint (default)"]
    lines += ["", f"The default run's sample ({first['iters']} iterations, {first['tokens']:,} tokens seen), "
              "first 12 lines:", "", "```", *first["sample"].splitlines()[:12], "```"]
    (RES / "quickstart.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    if sys.argv[1:] == ["--report"]:  # only rewrite the Markdown from the JSON
        report(json.loads((RES / "quickstart.json").read_text()))
    else:
        main()
