"""Readers for the released formats of standard benchmarks, each turned into the harness-identical prompt:

choice items are `{"context", "choices", "label"}`, generation items `{"question", "answer"}`.

- `choice`: JSONL `{"context", "choices", "label"}`, as given;
- `hellaswag`: JSONL `{"activity_label", "ctx_a", "ctx_b", "endings", "label"}` -> `{activity}: {ctx_a} {Ctx_b}`
  (the harness's cleaning of WikiHow's bracketed artifacts);
- `arc`: JSONL, AI2's `{"question": {"stem", "choices"}, "answerKey"}` or HF's flat rows -> `Question: {q}\nAnswer:`;
- `piqa`: JSONL `{"goal", "sol1", "sol2"}` with `label` or the release's `<name>-labels.lst` -> `Question: {goal}...`;
- `mmlu`: the released CSV (question, A, B, C, D, answer letter; no header) or HF JSONL -> the question, the options
  as `A. ..` lines, `Answer:`, choices A-D, and the subject's description line first;
- `gsm8k`: JSONL `{"question", "answer"}` with the final answer after `####` (prompts in answers.py);
- `sst2`, `cola`, `mrpc`, `qnli`, `rte`: GLUE's released TSV or HF JSONL -> the harness's glue/* prompt and label words.

`auto` picks the format from the extension and the keys of the first line (GLUE needs its name). Every problem
is one UserError naming the file, the line and what is wrong.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re

from llm_jax.errors import UserError
from llm_jax.eval.textfile import read_text_for_eval

CHOICE_FORMATS = ("choice", "hellaswag", "arc", "piqa", "mmlu", "sst2", "cola", "mrpc", "qnli", "rte")
GENERATE_FORMATS = ("gsm8k",)
FORMATS = ("auto",) + CHOICE_FORMATS + GENERATE_FORMATS

# GLUE: (prompt, label words, fields of the HF rows, label of each TSV label string)
GLUE = {
    "sst2": ("{sentence}\nQuestion: Is this sentence positive or negative?\nAnswer:", ["negative", "positive"]),
    "cola": ("{sentence}\nQuestion: Does this sentence make sense?\nAnswer:", ["no", "yes"]),
    "mrpc": ("Sentence 1: {sentence1}\nSentence 2: {sentence2}\nQuestion: Do both sentences mean the same thing?"
             "\nAnswer:", ["no", "yes"]),
    "qnli": ("{question}\n{sentence}\nQuestion: Does this response answer the question?\nAnswer:", ["yes", "no"]),
    "rte": ("{sentence1}\nQuestion: {sentence2} True or False?\nAnswer:", ["True", "False"]),
}
GLUE_TSV = {  # GLUE's released dev.tsv columns -> the HF field names, and its label strings -> label ids
    "sst2": {"sentence": "sentence", "label": "label"},
    "cola": None,  # no header: source, label, original label, sentence
    "mrpc": {"#1 String": "sentence1", "#2 String": "sentence2", "Quality": "label"},
    "qnli": {"question": "question", "sentence": "sentence", "label": "label"},
    "rte": {"sentence1": "sentence1", "sentence2": "sentence2", "label": "label"},
}
ENTAILMENT = {"entailment": 0, "not_entailment": 1}


def _jsonl(path: str) -> list[tuple[int, dict]]:
    rows = []
    for n, line in enumerate(read_text_for_eval(path, "--data").split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{n}: not JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise UserError(f"{path}:{n}: each line must be a JSON object, got {type(row).__name__}")
        rows.append((n, row))
    if not rows:
        raise UserError(f"{path} has no items")
    return rows


def _need(path, n, row, *keys):
    missing = [k for k in keys if k not in row]
    if missing:
        raise UserError(f"{path}:{n}: missing {', '.join(repr(k) for k in missing)} (has {', '.join(sorted(row))})")


def _choice_item(path, n, context, choices, label) -> dict:
    if not isinstance(context, str) or not isinstance(choices, list) or len(choices) < 2 or \
            not all(isinstance(c, str) and c for c in choices):
        raise UserError(f"{path}:{n}: needs a string context and a list of at least 2 non-empty string choices")
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(choices):
        raise UserError(f"{path}:{n}: label {label!r} is not an index into its {len(choices)} choices")
    return {"context": context, "choices": choices, "label": label}


def _hellaswag_clean(text: str) -> str:
    text = text.strip().replace(" [title]", ". ")
    return re.sub(r"\[.*?\]", "", text).replace("  ", " ")


def _sniff(path: str, kind: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    if ext == ".csv":
        return "mmlu"
    if ext == ".tsv":
        raise UserError(f"{path}: a TSV file is a GLUE task; say which with --format "
                        f"{'/'.join(GLUE)}")
    _, first = _jsonl(path)[0]
    for fmt, keys in (("choice", {"context", "choices", "label"}), ("hellaswag", {"ctx_a", "endings"}),
                      ("arc", {"answerKey"}), ("piqa", {"goal", "sol1"}), ("mmlu", {"question", "choices", "answer"}),
                      ("gsm8k", {"question", "answer"})):
        if keys <= set(first):
            return fmt
    raise UserError(f"{path}: cannot tell the format from its first line's keys ({', '.join(sorted(first))}); "
                    f"give --format ({', '.join(FORMATS[1:])})")


def read(path: str, kind: str, fmt: str = "auto") -> tuple[list[dict], str]:
    """(items, description prefix) of a task file for task kind `kind` ("choice" or "generate")."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r}: must be one of {', '.join(FORMATS)}")
    fmt = _sniff(path, kind) if fmt == "auto" else fmt
    wanted = CHOICE_FORMATS if kind == "choice" else GENERATE_FORMATS
    if fmt not in wanted:
        raise UserError(f"{path} is a {fmt} file, which `eval {kind}` does not score "
                        f"(`eval {'generate' if kind == 'choice' else 'choice'}` does)")
    cursor = _Cursor()
    try:
        return READERS[fmt](path, cursor)
    except UserError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:  # a value of the wrong kind
        where = f"{path}:{cursor.line}" if cursor.line else path
        raise UserError(f"{where}: not a valid {fmt} row ({type(e).__name__}: {e})") from None


class _Cursor:
    """The line a reader is at, so that any malformed value becomes one error naming it."""

    line: int | None = None

    def over(self, rows):
        for n, row in rows:
            self.line = n
            yield n, row


def _read_choice(path, cursor):
    items = []
    for n, row in cursor.over(_jsonl(path)):
        _need(path, n, row, "context", "choices", "label")
        items.append(_choice_item(path, n, row["context"], row["choices"], row["label"]))
    return items, ""


def _read_hellaswag(path, cursor):
    items = []
    for n, row in cursor.over(_jsonl(path)):
        _need(path, n, row, "activity_label", "ctx_a", "ctx_b", "endings", "label")
        context = _hellaswag_clean(row["activity_label"] + ": " + row["ctx_a"] + " " + row["ctx_b"].capitalize())
        items.append(_choice_item(path, n, context, [_hellaswag_clean(e) for e in row["endings"]],
                                  int(row["label"])))
    return items, ""


def _read_arc(path, cursor):
    items = []
    for n, row in cursor.over(_jsonl(path)):
        _need(path, n, row, "question", "answerKey")
        q = row["question"]
        if isinstance(q, dict):  # AI2's release: {"stem", "choices": [{"text", "label"}]}
            stem, texts, labels = q["stem"], [c["text"] for c in q["choices"]], [c["label"] for c in q["choices"]]
        else:
            _need(path, n, row, "choices")
            stem, texts, labels = q, row["choices"]["text"], row["choices"]["label"]
        if row["answerKey"] not in labels:
            raise UserError(f"{path}:{n}: answerKey {row['answerKey']!r} is not one of the labels {labels}")
        items.append(_choice_item(path, n, f"Question: {stem}\nAnswer:", texts, labels.index(row["answerKey"])))
    return items, ""


def _read_piqa(path, cursor):
    rows = _jsonl(path)
    labels_file = os.path.splitext(path)[0] + "-labels.lst"
    labels = None
    if "label" not in rows[0][1]:
        if not os.path.isfile(labels_file):
            raise UserError(f"{path} has no 'label' field and there is no {labels_file} beside it")
        labels = [int(x) for x in read_text_for_eval(labels_file, "labels").split()]
        if len(labels) != len(rows):
            raise UserError(f"{labels_file} has {len(labels)} labels for {len(rows)} items in {path}")
    items = []
    for i, (n, row) in enumerate(cursor.over(rows)):
        _need(path, n, row, "goal", "sol1", "sol2")
        label = labels[i] if labels is not None else row.get("label")
        items.append(_choice_item(path, n, f"Question: {row['goal']}\nAnswer:", [row["sol1"], row["sol2"]], label))
    return items, ""


def mmlu_prompt(question: str, options: list[str]) -> str:
    return question.strip() + "".join(f"\n{letter}. {o}" for letter, o in zip("ABCD", options)) + "\nAnswer:"


def mmlu_description(subject: str) -> str:
    return f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"


def _read_mmlu(path, cursor):
    items, subject = [], ""
    if path.lower().endswith(".csv"):  # the released data/{dev,val,test}/{subject}_{split}.csv
        subject = re.sub(r"_(dev|val|test)$", "", os.path.splitext(os.path.basename(path))[0])
        text = read_text_for_eval(path, "--data")
        reader = csv.reader(io.StringIO(text, newline=""))
        for row in reader:
            n = cursor.line = reader.line_num
            if not row:
                continue
            if len(row) != 6 or row[5].strip() not in ("A", "B", "C", "D"):
                raise UserError(f"{path}:{n}: an MMLU row is question, 4 options, answer letter (A-D)")
            label = "ABCD".index(row[5].strip())
            items.append(_choice_item(path, n, mmlu_prompt(row[0], row[1:5]), list("ABCD"), label))
    else:
        for n, row in cursor.over(_jsonl(path)):
            _need(path, n, row, "question", "choices", "answer")
            if not isinstance(row["choices"], list) or len(row["choices"]) != 4:
                raise UserError(f"{path}:{n}: an MMLU item has exactly 4 choices")
            subject = subject or row.get("subject", "")
            answer = "ABCD".index(row["answer"]) if isinstance(row["answer"], str) else row["answer"]
            items.append(_choice_item(path, n, mmlu_prompt(row["question"], row["choices"]), list("ABCD"), answer))
    return items, mmlu_description(subject) if subject else ""


def _read_gsm8k(path, cursor):
    items = []
    for n, row in cursor.over(_jsonl(path)):
        _need(path, n, row, "question", "answer")
        if "####" not in str(row["answer"]):
            raise UserError(f"{path}:{n}: the answer has no '#### N' final answer")
        items.append({"question": str(row["question"]), "answer": str(row["answer"])})
    return items, ""


def _glue_reader(task):
    template, words = GLUE[task]

    def rows_of(path):
        if not path.lower().endswith(".tsv"):
            return _jsonl(path)
        lines = [line.rstrip("\r") for line in read_text_for_eval(path, "--data").split("\n")]
        columns = GLUE_TSV[task]
        out = []
        if columns is None:  # CoLA: source, label, original label, sentence
            for n, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                parts = line.split("\t")
                if len(parts) != 4:
                    raise UserError(f"{path}:{n}: a CoLA row has 4 tab-separated columns")
                out.append((n, {"sentence": parts[3], "label": parts[1]}))
            return out
        header = lines[0].split("\t")
        for n, line in enumerate(lines[1:], 2):
            if not line.strip():
                continue
            parts = line.split("\t")
            row = dict(zip(header, parts))
            out.append((n, {ours: row.get(theirs) for theirs, ours in columns.items()}))
        return out

    def read_glue(path, cursor):
        items = []
        for n, row in cursor.over(rows_of(path)):
            fields = re.findall(r"{(\w+)}", template) + ["label"]
            _need(path, n, {k: v for k, v in row.items() if v is not None}, *fields)
            label = row["label"]
            label = ENTAILMENT[label] if label in ENTAILMENT else int(label)
            item = _choice_item(path, n, template.format(**row), list(words), label)
            raw = [row[f] for f in fields[:-1]]  # the sentence (pair) itself, for an encoder's classification head
            items.append(item | {"text": raw[0]} | ({"text_pair": raw[1]} if len(raw) > 1 else {}))
        return items, ""
    return read_glue


READERS = {"choice": _read_choice, "hellaswag": _read_hellaswag, "arc": _read_arc, "piqa": _read_piqa,
           "mmlu": _read_mmlu, "gsm8k": _read_gsm8k} | {task: _glue_reader(task) for task in GLUE}
