"""The calculator recipe end to end: data, fine-tuning (configs/tools_tiny.py) and held-out accuracy with and
without the calculator; writes experiments/tools/results/{results.json,README.md}.

    make train                      # runs/tiny, the base model
    python experiments/tools/run.py [--limit N]
"""

import argparse
import datetime
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
CLI = [sys.executable, "-m", "llm_jax"]


def run(*args) -> str:
    print("$", " ".join(args), flush=True)
    out = subprocess.run(CLI + list(args), cwd=REPO, check=True, stdout=subprocess.PIPE, text=True).stdout
    print(out.strip().splitlines()[-1][:300] if out.strip() else "", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=0, help="score the first N held-out problems (0: all 200)")
    args = parser.parse_args()
    if not os.path.isdir(os.path.join(REPO, "runs/tiny")):
        sys.exit("runs/tiny is missing: run `make train` first")
    if not os.path.isdir(os.path.join(REPO, "runs/tool_data")):
        run("tools", "make-data", "--output", "runs/tool_data")
    started, saved = time.time(), os.path.join(HERE, "results", "results.json")
    if not os.path.isdir(os.path.join(REPO, "runs/tools_tiny")):
        run("train", "--config", "configs/tools_tiny.py", "--workdir", "runs/tools_tiny")
        trained_s = time.time() - started
    else:  # trained by an earlier run of this script: its time stands
        trained_s = json.load(open(saved))["train_seconds"] if os.path.exists(saved) else float("nan")
    base = json.loads(run("tools", "score", "--workdir", "runs/tiny", "--data", "runs/tool_data/test.jsonl",
                          "--limit", str(args.limit), "--json").strip().splitlines()[-1])
    tuned = json.loads(run("tools", "score", "--workdir", "runs/tools_tiny", "--data", "runs/tool_data/test.jsonl",
                           "--limit", str(args.limit), "--json").strip().splitlines()[-1])
    result = {"date": datetime.date.today().isoformat(), "train_seconds": round(trained_s), "base": base,
              "fine_tuned": tuned}
    out = os.path.join(HERE, "results")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(result, f, indent=2, sort_keys=True)
    rows = ["| model | offered the calculator | without it | calls per problem | calls that ran | a call gave the "
            "right result |", "|---|---|---|---|---|---|"]
    for name, r in (("runs/tiny (no fine-tuning)", base), ("runs/tools_tiny (configs/tools_tiny.py)", tuned)):
        rows.append(f"| {name} | {r['accuracy_with_tool']:.3f} | {r['accuracy_without_tool']:.3f} | "
                    f"{r['calls_per_problem']:.2f} | {r['calls_succeeded']:.0%} | {r['right_call_result']:.0%} |")
    kinds = ["| kind | with | without |", "|---|---|---|"] + [
        f"| {k} | {v['with_tool']:.2f} | {v['without_tool']:.2f} |" for k, v in tuned["by_kind"].items()]
    text = f"""# Tool use: a tiny model learns to call a calculator

Measured {result['date']} by `python experiments/tools/run.py` on a 2-core CPU: `llm-jax tools make-data`
(synthetic arithmetic word problems: 4,000 training problems, each as two records — calculator offered: call, result,
answer; not offered: the answer), `llm-jax train --config configs/tools_tiny.py` (800 steps of full fine-tuning from
runs/tiny, {result['train_seconds']} s including the data and compile), then `llm-jax tools score` on
{tuned['problems']} held-out problems (greedy; the call constrained to the calculator's JSON schema; at most 2 calls,
then an answer). Correct = the first number of the final answer is the exact result.

{chr(10).join(rows)}

Per kind, fine-tuned model:

{chr(10).join(kinds)}
"""
    with open(os.path.join(out, "README.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
