"""What a replay leaves behind: the per-part table, the summary, the images worth a look.

Output folder:

    parts.csv                   one row per part (both models' columns with --against)
    summary.json                the summary printed by --json
    disagreements/missed_defects/, disagreements/false_rejects/
                                the frame of every part whose verdict disagrees with its
                                label (model A), the part's box and score drawn on it
    flips/pass_to_reject/, flips/reject_to_pass/
                                with --against: every part whose verdict B changes
    confusion_matrix.png, score_histogram.png
                                where labels exist (model A)
"""

from __future__ import annotations

import csv
import json
import resource
from pathlib import Path

import numpy as np

from station import plots
from station.judgement import Judgement
from station.replay.replay import ModelRun, PartResult, ReplayRun
from station.scoring import figures_at


def model_summary(run: ModelRun) -> dict:
    results = run.results
    labelled = [r for r in results if r.label in ("defective", "ok")]
    latencies = np.array([r.latency_ms for r in results]) if results else np.zeros(1)
    failsafe: dict[str, int] = {}
    for r in results:
        if r.failsafe_reason:
            failsafe[r.failsafe_reason] = failsafe.get(r.failsafe_reason, 0) + 1
    summary = {
        "model": run.classifier.version,
        "threshold": run.judge.threshold,
        "parts": len(results),
        "rejects": sum(r.verdict == "reject" for r in results),
        "passes": sum(r.verdict == "pass" for r in results),
        "failsafe_rejects": sum(failsafe.values()),
        "failsafe_by_reason": failsafe,
        "labelled": len(labelled),
        "missed_defects": sum(r.missed_defect for r in labelled) if labelled else None,
        "false_rejects": sum(r.false_reject for r in labelled) if labelled else None,
        "accuracy": None,
        "confusion": None,
        "latency_ms_p50": round(float(np.percentile(latencies, 50)), 3),
        "latency_ms_p99": round(float(np.percentile(latencies, 99)), 3),
        "gate_mismatches": sum(
            (r.gate_action == "fired") != (r.verdict == "reject") for r in results
        ),
    }
    if labelled:
        figures = _figures(labelled)
        summary["accuracy"] = round(figures.accuracy, 5)
        summary["confusion"] = figures.confusion
    recorded = [r for r in results if r.recorded_verdict]
    if recorded:
        summary["changed_from_recording"] = sum(r.verdict != r.recorded_verdict for r in recorded)
    return summary


def _figures(labelled: list[PartResult]):
    """Figures on the verdicts (fail-safe rejects included), not on the scores."""
    labels = np.array([r.label == "defective" for r in labelled])
    rejected = np.array([1.0 if r.verdict == "reject" else 0.0 for r in labelled])
    return figures_at(labels, rejected, 0.5)


def flips(a: ModelRun, b: ModelRun) -> list[tuple[PartResult, PartResult]]:
    return [(ra, rb) for ra, rb in zip(a.results, b.results) if ra.verdict != rb.verdict]


def _summary(run: ReplayRun, out_dir: Path) -> dict:
    a = run.runs[0]
    parts = len(a.results)
    out = {
        "source": str(run.source.path),
        "kind": run.source.kind,
        **model_summary(a),
        "bad_inputs": len(run.bad_inputs),
        "bad_input_files": [{"file": b.name, "reason": b.reason} for b in run.bad_inputs],
        "wall_s": round(run.wall_s, 2),
        "parts_per_s": round(parts / run.wall_s, 1) if run.wall_s else None,
        "faster_than_line": round(parts / run.wall_s / _line_rate(a), 1) if run.wall_s else None,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "out_dir": str(out_dir),
    }
    if len(run.runs) > 1:
        b = run.runs[1]
        flipped = flips(a, b)
        out["against"] = model_summary(b)
        out["flips"] = {
            "pass_to_reject": sum(ra.verdict == "pass" for ra, _ in flipped),
            "reject_to_pass": sum(ra.verdict == "reject" for ra, _ in flipped),
            "parts": [
                {
                    "index": ra.index,
                    "name": ra.name,
                    "label": ra.label,
                    "score_a": ra.score,
                    "score_b": rb.score,
                    "verdict_a": ra.verdict,
                    "verdict_b": rb.verdict,
                }
                for ra, rb in flipped
            ],
        }
    return out


def _line_rate(run: ModelRun) -> float:
    return 1000 / run.spacing_ms


def write(run: ReplayRun, out_dir: Path) -> dict:
    """Write every output into `out_dir`; returns the summary (also in summary.json)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_csv(run, out_dir / "parts.csv")
    _write_examples(run, out_dir)
    result = _summary(run, out_dir)
    result["plots"] = _write_plots(run.runs[0], out_dir)
    (out_dir / "summary.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def as_text(summary: dict) -> str:
    """The summary for a person at a terminal: the figures that matter first."""
    lines = [
        f"source     {summary['source']} ({summary['kind']}): {summary['parts']} parts, "
        f"{summary['bad_inputs']} unreadable",
        *_model_lines("", summary),
    ]
    if "against" in summary:
        f = summary["flips"]
        lines += [
            *_model_lines("against ", summary["against"]),
            f"FLIPS      pass -> reject {f['pass_to_reject']}, "
            f"reject -> pass {f['reject_to_pass']}",
        ]
    lines += [
        f"speed      {summary['parts_per_s']} parts/s in {summary['wall_s']} s "
        f"({summary['faster_than_line']}x the line's rate), peak RSS {summary['peak_rss_mb']} MB",
        f"output     {summary['out_dir']}",
    ]
    lines += [f"unreadable {b['file']}: {b['reason']}" for b in summary["bad_input_files"]]
    return "\n".join(lines)


def _model_lines(prefix: str, s: dict) -> list[str]:
    lines = [
        f"{prefix}model {s['model']}, threshold {s['threshold']:.4f}",
        f"  rejects {s['rejects']} (fail-safe {s['failsafe_rejects']} {s['failsafe_by_reason']})"
        f", passes {s['passes']}, latency p50 {s['latency_ms_p50']} ms"
        f" p99 {s['latency_ms_p99']} ms",
    ]
    if s["labelled"]:
        c = s["confusion"]
        lines += [
            f"  MISSED DEFECTS {s['missed_defects']}   false rejects {s['false_rejects']}   "
            f"accuracy {s['accuracy']:.4f} ({s['labelled']} labelled)",
            f"  confusion: true pass {c['true_pass']}, false reject {c['false_reject']}, "
            f"missed defect {c['missed_defect']}, true reject {c['true_reject']}",
        ]
    if "changed_from_recording" in s:
        lines.append(f"  verdicts changed from the recording: {s['changed_from_recording']}")
    if s["gate_mismatches"]:
        lines.append(f"  GATE MISMATCHES {s['gate_mismatches']} (the Mega did not act as told)")
    return lines


def _write_csv(run: ReplayRun, path: Path) -> None:
    columns = [
        "index",
        "name",
        "label",
        "score",
        "verdict",
        "failsafe_reason",
        "detail",
        "latency_ms",
        "gate_action",
        "gate_reason",
        "recorded_verdict",
        "recorded_score",
    ]
    others = run.runs[1:]
    header = columns + (["score_b", "verdict_b", "gate_action_b", "flip"] if others else [])
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for k, r in enumerate(run.runs[0].results):
            row = [getattr(r, c) for c in columns]
            row[columns.index("latency_ms")] = round(r.latency_ms, 3)
            if others:
                rb = others[0].results[k]
                row += [rb.score, rb.verdict, rb.gate_action, r.verdict != rb.verdict]
            writer.writerow(row)


def _write_examples(run: ReplayRun, out_dir: Path) -> None:
    for index, (part, judgements) in run.examples.items():
        results = [model_run.results[index] for model_run in run.runs]
        a = results[0]
        stem = f"{index:05d}_{Path(part.name).stem}"
        if a.missed_defect or a.false_reject:
            folder = "missed_defects" if a.missed_defect else "false_rejects"
            _save(out_dir / "disagreements" / folder / f"{stem}.png", judgements[0], a)
        if len(results) > 1 and results[1].verdict != a.verdict:
            folder = f"{a.verdict}_to_{results[1].verdict}"
            _save(out_dir / "flips" / folder / f"{stem}.png", judgements[1], results[1], a)


def _save(path: Path, j: Judgement, result: PartResult, before: PartResult | None = None) -> None:
    """The frame as judged, with the part's box and what was decided written on it."""
    assert j.frame is not None
    text = [f"label {result.label or '?'}: {result.verdict} {_score(result.score)}"]
    if before is not None:
        text.insert(0, f"A: {before.verdict} {_score(before.score)}")
    if result.failsafe_reason:
        text.append(f"fail-safe: {result.failsafe_reason}")
    plots.save_part(path, j.frame.image, j.roi, text, result.verdict == "reject")


def _score(score: float | None) -> str:
    return "no score" if score is None else f"{score:.4f}"


def _write_plots(run: ModelRun, out_dir: Path) -> dict:
    labelled = [r for r in run.results if r.label in ("defective", "ok")]
    if not labelled:
        return {}
    title = f"replay ({run.classifier.version})"
    written = {
        "confusion_matrix": out_dir / "confusion_matrix.png",
        "score_histogram": out_dir / "score_histogram.png",
    }
    plots.confusion_matrix(
        _figures(labelled),
        run.judge.threshold,
        title,
        written["confusion_matrix"],
    )
    scored = [r for r in labelled if r.score is not None]
    plots.score_histogram(
        np.array([r.label == "defective" for r in scored]),
        np.array([r.score for r in scored]),
        run.judge.threshold,
        title,
        written["score_histogram"],
    )
    return {k: str(v) for k, v in written.items()}
