"""Markdown table of quality-benchmark results (pure: records in, text out)."""

from __future__ import annotations

import numpy as np

MARGIN = 0.03  # issue 13: pixlab's mean must beat the forest's by this much, no draw below it


def _fmt(v) -> str:
    return "–" if v is None else f"{v:.3f}"


def _scores(recs) -> list[float]:
    return [r["score"] for r in recs if r.get("score") is not None and not r.get("error")]


def _variant(setting: str) -> str:
    return setting if setting in ("classes3", "classes2") else "-"


def rows(results: list[dict]) -> list[dict]:
    """One row per (case, setting, seconds): pixlab / forest / Otsu / upper bound aggregated over draws."""
    by_kind: dict = {}
    for r in results:
        by_kind.setdefault(r["kind"], []).append(r)
    pix_keys = sorted({(r["case"], r["setting"], r["seconds"]) for r in by_kind.get("pixlab", [])},
                      key=lambda k: (k[0], k[1], k[2] or 0))
    forest_keys = {(r["case"], r["setting"]) for r in by_kind.get("forest", [])}
    covered = {(c, _variant(s)) for c, s, _ in pix_keys}
    keys = pix_keys + [(c, v, None) for c, v in sorted(forest_keys - covered)]
    out = []
    for case, setting, seconds in keys:
        var = _variant(setting) if seconds is not None else setting
        pix = [r for r in by_kind.get("pixlab", []) if (r["case"], r["setting"], r["seconds"]) == (case, setting, seconds)]
        forest = [r for r in by_kind.get("forest", []) if (r["case"], r["setting"]) == (case, var)]
        otsu = [r for r in by_kind.get("otsu", []) if (r["case"], r["setting"]) == (case, var)]
        upper = [r for r in by_kind.get("upper", []) if (r["case"], r["setting"], r["seconds"]) == (case, setting, seconds)]
        ps, fs = _scores(pix), _scores(forest)
        f_by_draw = {r["draw"]: r["score"] for r in forest if r.get("score") is not None}
        below = [r["draw"] for r in pix if r.get("score") is not None and r["draw"] in f_by_draw
                 and r["score"] < f_by_draw[r["draw"]]]
        errors = sorted({r["error"] for r in pix + forest + upper if r.get("error")})
        row = {
            "case": case, "setting": setting if seconds is not None else "(forest only)", "seconds": seconds,
            "pixlab_mean": float(np.mean(ps)) if ps else None, "pixlab_worst": min(ps) if ps else None,
            "forest_mean": float(np.mean(fs)) if fs else None, "forest_worst": min(fs) if fs else None,
            "otsu": _scores(otsu)[0] if _scores(otsu) else None,
            "upper": _scores(upper)[0] if _scores(upper) else None,
            "n_draws": len(ps), "degenerate": sum(bool(r.get("degenerate")) for r in pix),
            "steps": int(np.mean([r["steps"] for r in pix if r.get("steps") is not None]))
            if any(r.get("steps") is not None for r in pix) else None,
            "draws_below_forest": below,
            "recipe": ",".join(sorted({f"{r.get('recipe')}:{r.get('architecture')}@{r.get('tile_size')}"
                                       for r in pix if r.get("recipe")})),
            "warned": sum(bool(r.get("warnings")) for r in pix),
            "quality_check": sum(r.get("quality_check") is not None for r in pix),
            "error": "; ".join(errors)[:200],
        }
        row["diff"] = (row["pixlab_mean"] - row["forest_mean"]
                       if row["pixlab_mean"] is not None and row["forest_mean"] is not None else None)
        row["passes"] = bool(row["diff"] is not None and row["diff"] >= MARGIN and not below and not errors
                             and row["degenerate"] == 0)
        out.append(row)
    return out


def render(results: list[dict]) -> str:
    """The markdown table plus one summary line per setting."""
    rs = rows(results)
    head = ("| case | setting | s | pixlab mean | worst | forest mean | worst | Otsu | upper | pixlab−forest "
            "| degenerate | steps | recipe | warned | error |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rs:
        s = "" if r["seconds"] is None else f"{r['seconds']:.0f}"
        deg = f"{r['degenerate']}/{r['n_draws']}" if r["n_draws"] else "–"
        diff = "–" if r["diff"] is None else f"{r['diff']:+.3f}"
        lines.append(
            f"| {r['case']} | {r['setting']} | {s} | {_fmt(r['pixlab_mean'])} | {_fmt(r['pixlab_worst'])} "
            f"| {_fmt(r['forest_mean'])} | {_fmt(r['forest_worst'])} | {_fmt(r['otsu'])} | {_fmt(r['upper'])} "
            f"| {diff} "
            f"| {deg} | {'–' if r['steps'] is None else r['steps']} | {r['recipe'] or '–'} "
            f"| {r['warned'] or ''} | {r['error']} |")
    lines.append("")
    settings = sorted({(r["setting"], r["seconds"]) for r in rs if r["seconds"] is not None},
                      key=lambda k: (k[0], k[1]))
    for setting, seconds in settings:
        mine = [r for r in rs if (r["setting"], r["seconds"]) == (setting, seconds)]
        ok = [r["case"] for r in mine if r["passes"]]
        bad = [r["case"] for r in mine if not r["passes"]]
        degen = sum(r["degenerate"] for r in mine)
        lines.append(f"- {setting} @ {seconds:.0f} s: {len(ok)}/{len(mine)} cases with pixlab mean >= forest + "
                     f"{MARGIN} and no draw below the forest; degenerate models: {degen}"
                     + (f"; failing: {', '.join(bad)}" if bad else ""))
    return "\n".join(lines)
