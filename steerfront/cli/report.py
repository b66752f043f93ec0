"""Printing the commands share: front tables, a point in one line, judged points and two
generations side by side, the layer priors table, a launch's report; and `steerfront report`,
which prints a launch's report again."""

from __future__ import annotations

import argparse
import itertools
import json
import sys

from steerfront.search.best import verdict
from steerfront.search.judge_points import BASELINES


def describe(record: dict) -> str:
    parts = [
        f"{record['form']} {record['objective']} layer {int(record['layer'])} m {record['m']:.3g}"
    ]
    if record.get("rank") is not None:
        parts.append(f"rank {int(record['rank'])}")
    if record.get("gamma") is not None:
        parts.append(f"gamma {record['gamma']:.3g}")
    parts.append(
        f"pref_odds {record['pref_odds']:.3f} util_odds {record['util_odds']:.3f} "
        f"(test {cell(record.get('test_pref_odds'))} / {cell(record.get('test_util_odds'))})"
    )
    if record.get("kl") is not None:
        parts.append(f"kl {record['kl']:.3g}")
    return ", ".join(parts)


def print_front(rows: list[dict], baselines: dict) -> None:
    """The unsteered model and the prompted one (`best.baselines`; a search made before the
    prompted baseline has none), then one line per front point, numbered from 1 as
    `export --point` counts (`dense`: a point of the extended front that is not a trial's own
    result); log-odds with their 95% intervals."""
    narrow = ("point", "form", "objective", "layer", "m", "rank", "gamma")
    wide = ("pref val", "util val", "drop val", "pref test", "util test", "kl")
    print(" ".join(f"{h:>12}" for h in narrow) + " " + " ".join(f"{h:>21}" for h in wide))
    scores = ("pref_odds", "util_odds", "util_drop", "test_pref_odds", "test_util_odds", "kl")
    shown = [baseline_row(name, row) for name, row in baselines.items() if row is not None]
    for number, r in enumerate(rows, start=1):  # numbered as `export --point` counts
        shown.append({**r, "point": f"{number} {'dense' if r.get('dense') else 'trial'}"})
    for r in shown:
        cells = [r["point"], r.get("form"), r.get("objective"), r.get("layer"), r.get("m")]
        cells += [r.get("rank"), r.get("gamma")]
        line = " ".join(f"{cell(c):>12}" for c in cells)
        print(line + " " + " ".join(f"{interval(r, k):>21}" for k in scores))


def baseline_row(name: str, baseline: dict) -> dict:
    """A baseline's scores (`val_*`, `test_*`) as a front row: the unsteered model's util_drop
    and kl are 0 by definition, the prompted model's its own."""
    row = {"point": name, "util_drop": 0.0, "kl": 0.0}
    for key, value in baseline.items():
        if key.startswith("val_"):
            row[key.removeprefix("val_")] = value
        elif key.startswith("test_"):
            row[key] = value
    return row


def interval(record: dict, key: str) -> str:
    """`mean [low, high]`, or the mean alone where the interval is not known."""
    low, high = record.get(f"{key}_lo"), record.get(f"{key}_hi")
    if low is None or high is None:
        return cell(record.get(key))
    return f"{record[key]:.3f} [{low:.2f},{high:.2f}]"


def cell(value: object) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.3f}"
    return str(value)


def print_judged(summary: dict) -> None:
    """The judged points below the unsteered and prompted models, the agreement of log-odds
    with the judge, and two generations of the picked point beside the unsteered model's."""
    judged = summary["judged"]
    names = [k for k in judged[0] if k not in _JUDGED_FIELDS]
    head = ("point", "form", "objective", "layer", "m", "pref val", "util val", "kl")
    print(" ".join(f"{h:>12}" for h in (*head, *names)))
    for r in judged:
        cells = [BASELINES.get(r["point"], r["point"]), r["form"], r["objective"]]
        cells += [r["layer"], r["m"], r["pref_odds"], r["util_odds"], r.get("kl")]
        cells += [r[n] for n in names]
        print(" ".join(f"{cell(c):>12}" for c in cells))
    accuracy, probe = summary.get("probe_accuracy"), summary.get("probe") or {}
    if accuracy is not None:
        where = (
            f" on {probe['held_out']} {probe['on']} for prompts not used to fit it"
            if probe.get("held_out")
            else ""
        )
        print(f"concept probe: held-out accuracy {accuracy:.2f}{where}")
    for warning in summary.get("judge_warnings", []):
        print(f"steerfront: warning: {warning}", file=sys.stderr)
    if summary.get("unparsed"):
        print(
            f"{summary['unparsed']} judge answers held no rating (kept in generations.parquet, "
            f"columns *_answer; not scored), e.g.: {summary['unparsed_example'][:200]!r}"
        )
    from steerfront.search.judge_results import agreement_text

    agreement = summary["agreement"]
    print(
        "agreement (Spearman's rho over the judged points, 95% bootstrap interval): "
        f"pref_odds vs concept {agreement_text(agreement['pref_concept'])}; "
        f"util_odds vs fluency {agreement_text(agreement['util_fluency'])}"
    )
    shown = summary["examples"]
    if shown["picked"] is not None:
        p = shown["picked"]
        why = {
            "judged": "best --rule judged",
            "max-pref": "the search's pick, best --rule max-pref: no judged point keeps "
            "enough fluency for --rule judged",
        }[shown["rule"]]
        print(f"\npicked ({why}): point {p['point']}, {p['form']} {p['objective']} "
              f"layer {p['layer']} m {p['m']:.3g}")  # fmt: skip
        if summary.get("verdict"):
            print(verdict(summary["verdict"]))
        for pair in shown["rows"]:
            print(f"\nprompt: {pair['prompt']}")
            side_by_side(pair["unsteered"], pair["picked"], names)
    elif shown.get("why"):
        print(f"\npicked: none ({shown['why']})")
    print(f"judge results: {summary['judge_folder']}/")


_JUDGED_FIELDS = (
    "point", "trial_id", "form", "objective", "layer", "m", "rank", "gamma", "pref_odds",
    "util_odds", "kl", "n", "probe_accuracy", "unparsed", "on_front", "asked",
)  # fmt: skip


def side_by_side(left: dict, right: dict, names: list[str], width: int = 48) -> None:
    """Two generations in two columns, their scores below them."""
    import textwrap

    columns = []
    for title, side in (("unsteered", left), ("picked", right)):
        scores = ", ".join(f"{n} {cell(side.get(n))}" for n in names if n in side)
        lines = [title, *textwrap.wrap(" ".join(side["text"].split()) or "(empty)", width)]
        columns.append([*lines, "", *textwrap.wrap(scores, width)])
    for a, b in itertools.zip_longest(*columns, fillvalue=""):
        print(f"  {a:<{width}}  | {b}")


def print_layers(document: dict) -> None:
    """The per-layer table, the recommended layers and where the files went."""
    heads = ("layer", "nav d", "nav c", "d+c", "lens", "gain", "m@kl", "rank", "rec")
    keys = ("d", "c", "score", "lens", "gain", "m", "rank")
    print("  ".join(f"{h:>7}" for h in heads))
    picks = {layer: i for i, layer in enumerate(document["recommended"], start=1)}
    for row in document["rows"]:
        cells = [f"{row['layer']:>7}"]
        cells += [f"{row[k]:>7.3f}" if row[k] is not None else f"{'-':>7}" for k in keys]
        mark = f"#{picks[row['layer']]}" if row["layer"] in picks else ""
        mark = mark or ("" if row["in_window"] else "out")
        cells.append(f"{mark:>7}")
        print("  ".join(cells).rstrip())
    lo, hi = document["window"]
    kl = f" at kl {document['kl']:g}" if document["kl"] is not None else ""
    print(
        f"recommended layers (mean rank of d+c, lens{', gain' + kl if kl else ''}; "
        f"window {lo}..{hi}): {', '.join(map(str, document['recommended']))}"
    )
    print(f"wrote {document['out']}/: layers.json, layers.png")


def add(commands: argparse._SubParsersAction) -> None:
    from steerfront.cli.args import add_output, add_storage

    report = commands.add_parser(
        "report", help="print a launch's report again: one row per concept, best gain first"
    )
    report.add_argument("launch", help="launch name (steerfront search --concept A --concept B)")
    add_storage(report)
    add_output(report, '{"launch", "report": a row per concept, "model_loads"}', progress=False)
    report.set_defaults(run=run, parser=report)


def run(args: argparse.Namespace) -> None:
    from steerfront.search.launch import read_report

    document = read_report(args.storage, args.launch)
    if args.json:
        print(json.dumps(document, default=str))
        return
    print_report(document)


def print_report(document: dict) -> None:
    """A launch's report: a row per concept (best test gain over unsteered first) with its
    pick, gains over unsteered and over prompting (95% intervals), kl, verdict, the judge's
    scores of the pick (when judged) and the layer prior's best layer."""
    heads = ("concept", "pick", "gain [95%]", "vs prompted [95%]", "kl", "verdict")
    heads += ("judged c/f", "prior layer")
    rows = []
    for r in document["report"]:
        pick = (
            "-"
            if r["form"] is None
            else (f"{r['form']} {r['objective']} L{int(r['layer'])} m {r['m']:.3g}")
        )
        judged = (
            "-"
            if r["judged_concept"] is None
            else (f"{r['judged_concept']:.2f}/{r['judged_fluency']:.2f}")
        )
        rows.append((r["concept"], pick, _gain(r, "gain"), _gain(r, "prompted_gain"),
                     cell(r["kl"]), r["verdict"], judged, cell(r["prior_layer"])))  # fmt: skip
    widths = [max(len(str(x)) for x in column) for column in zip(heads, *rows, strict=True)]
    for line in (heads, *rows):
        print("  ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=True)).rstrip())
    loads = document.get("model_loads")
    print(f"launch {document['launch']}: {len(rows)} concepts"
          + (f", {loads} model loads in the trial workers" if loads is not None else "")
          + f"; report in {document['folder']}/report.parquet and report.png")  # fmt: skip


def _gain(row: dict, key: str) -> str:
    if row[key] is None:
        return "-"
    return f"{row[key]:+.2f} [{row[f'{key}_lo']:.2f}, {row[f'{key}_hi']:.2f}]"
