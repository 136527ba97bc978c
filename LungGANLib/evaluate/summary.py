"""The table a generator is chosen by: one line per model, from the rows ``benchmarks/validate.py`` writes
(and keeps in each model card's ``evaluation``): held-out and outside Dice, the least lesion inside, spill and
the synthetic lesions kept. ``benchmarks/validate.py`` prints it; ``docs/results.md`` shows the shipped cards' rows.
"""

from __future__ import annotations

#: The cases the table reads, by their names in the rows.
HELD_OUT_CASE = "lidc-idri-0001"
OUTSIDE_CASE = "cip-ct-64"


def pct(value) -> str:
    """A share as a percentage for the tables; a dash for none."""
    return "–" if value is None else f"{100 * value:.1f} %"


def _num(value) -> str:
    return "–" if value is None else f"{value:.4f}"


def _get(rows: list[dict], case: str, key: str):
    for r in rows:
        if r["case"] == case:
            return r["lungs"]["dice"] if key == "dice" else r.get(key)
    return None


def worst_spill_row(rows: list[dict]) -> dict:
    """The row of one model with the largest spill (as a share of the reference lung) over the references made
    here: the outside reference (cip-ct-64) is scored by Dice alone. The first row when only that one is there."""
    return max((r for r in rows if r["case"] != OUTSIDE_CASE), key=lambda r: r["spill_percent"], default=rows[0])


def summary_table(rows: list[dict]) -> str:
    """Markdown, one line per model and envelope setting: the figures the default model is chosen by (see its card).
    Spill is the worst over the references made here; the outside reference (cip-ct-64) is scored by Dice alone."""
    lines = [
        "| model | envelope | Dice held out (lidc-0001) | Dice cip-ct-64 | least nodule inside (lidc-0001 / 0002) "
        "| A0001 tumour inside (s2 / s3) | worst spill (shared references) | synthetic lesions kept "
        "| synthetic dense lung kept |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["model"], r["envelope"]), []).append(r)
    for (model, envelope), group in groups.items():
        worst = worst_spill_row(group)
        lines.append(
            f"| {model} | {'on' if envelope else 'off'} | {_num(_get(group, HELD_OUT_CASE, 'dice'))} | "
            f"{_num(_get(group, OUTSIDE_CASE, 'dice'))} | "
            f"{pct(_get(group, 'lidc-idri-0001', 'lesions_min'))} / {pct(_get(group, 'lidc-idri-0002', 'lesions_min'))} | "
            f"{pct(_get(group, 'lung-pet-ct-dx-a0001-series2', 'lesions_min'))} / "
            f"{pct(_get(group, 'lung-pet-ct-dx-a0001-series3', 'lesions_min'))} | "
            f"{worst['spill_ml']:.1f} mL ({worst['spill_percent']:.2f} %) | {pct(group[0].get('synthetic_kept'))} | "
            f"{pct(group[0].get('synthetic_dense_kept'))} |"
        )
    return "\n".join(lines)


#: The markers of the fold protocol's section of ``docs/results.md`` (``benchmarks/folds.py`` writes it; ``lunggan
#: compare`` rewrites the rest of the file and keeps it).
FOLDS_BEGIN = "<!-- folds: begin (benchmarks/folds.py writes this section) -->"
FOLDS_END = "<!-- folds: end -->"
#: The markers of the review's section (``benchmarks/review.py --report`` writes it, after the folds' section).
REVIEW_BEGIN = "<!-- review: begin (benchmarks/review.py writes this section) -->"
REVIEW_END = "<!-- review: end -->"
#: The markers of the section on scans acquired unlike ours (``benchmarks/shifts.py --report`` writes it).
SHIFTS_BEGIN = "<!-- shifts: begin (benchmarks/shifts.py writes this section) -->"
SHIFTS_END = "<!-- shifts: end -->"
#: The benchmarks' sections that ``lunggan compare`` keeps when it rewrites ``docs/results.md``.
KEPT_SECTIONS = ((FOLDS_BEGIN, FOLDS_END), (REVIEW_BEGIN, REVIEW_END), (SHIFTS_BEGIN, SHIFTS_END))


def folds_section(text: str, begin: str = FOLDS_BEGIN, end: str = FOLDS_END) -> str | None:
    """A kept section of a results report (the folds' by default), markers included, or None when it has none."""
    if begin not in text or end not in text:
        return None
    return text[text.index(begin) : text.index(end) + len(end)]


def with_folds_section(text: str, section: str | None, begin: str = FOLDS_BEGIN, end: str = FOLDS_END) -> str:
    """``text`` with its kept section (the folds' by default) replaced by ``section`` (markers included); a missing
    one goes after the folds' section, or after the title line; ``text`` itself when ``section`` is None."""
    if section is None:
        return text
    old = folds_section(text, begin, end)
    if old is not None:
        return text.replace(old, section)
    if begin != FOLDS_BEGIN and FOLDS_END in text:
        at = text.index(FOLDS_END) + len(FOLDS_END)
        return f"{text[:at]}\n\n{section}{text[at:]}"
    title, _, rest = text.partition("\n")
    return f"{title}\n\n{section}\n{rest}"


def with_kept_sections(text: str, before: str) -> str:
    """``text`` (a results report written anew) with the benchmarks' sections (``KEPT_SECTIONS``) that ``before``
    (the report it replaces) had: the folds' after the title, each other one right after the folds'."""
    for begin, end in KEPT_SECTIONS:
        text = with_folds_section(text, folds_section(before, begin, end), begin, end)
    return text
