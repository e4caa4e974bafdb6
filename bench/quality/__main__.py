"""Quality benchmark (issue 13): pixlab from sparse strokes vs the random-forest preview, many kinds of image.

    python -m bench.quality                                  # 6 cases x defaults x 3 draws x 60 s (~25 min, 2 cores)
    python -m bench.quality --forest-only                    # forest + Otsu only (~1 min)
    python -m bench.quality --settings defaults,tile256,resnet18 --seconds 180 --upper
    python -m bench.quality --table bench/out/quality.json   # print the table of saved results

Settings (``--settings``, comma-separated): defaults (``TrainConfig(time_limit_s=S)``), tile128/256/512
(``tile_size`` set), resnet18/resnet34 (``architecture="unet", encoder=..., pretrained=False``),
tile256_resnet18 (issue 13's broken setting), t60/t180/t600 (``time_limit_s``), classes3 (2-class
cases split into 3 where meaningful: fluo_nuclei bright/dim nuclei, multiplex_if target/other
nuclei) and classes2 (3-class cases with their tissue classes merged). Results merge into ``--out``
by (case, setting, seconds, draw), so runs accumulate.
"""

from __future__ import annotations

import argparse
import sys
import time


def main(argv=None) -> int:
    from bench.quality import run as R
    from bench.quality.cases import CASES
    from bench.quality.table import render

    ap = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="all", help=f"comma-separated, or 'all': {', '.join(CASES)}")
    ap.add_argument("--settings", default="defaults", help=f"comma-separated: {', '.join(R.SETTINGS)}")
    ap.add_argument("--seconds", type=float, default=60.0, help="time_limit_s per run (t60/t180/t600 set their own)")
    ap.add_argument("--draws", type=int, default=3, help="stroke draws (seeds 0..N-1)")
    ap.add_argument("--upper", action="store_true", help="also train on the full truth mask (once per case/setting; cached in --out)")
    ap.add_argument("--forest-only", action="store_true", help="only the random forest and Otsu (fast)")
    ap.add_argument("--rerun", action="store_true", help="rerun pixlab runs already in --out (default: reuse them)")
    ap.add_argument("--out", default="bench/out/quality.json", help="results JSON (merged, not overwritten)")
    ap.add_argument("--table", metavar="FILE.json", help="only print the table of saved results")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # child process: one pixlab run
    a = ap.parse_args(argv)

    if a.one:
        R.one_main(a.one)
        return 0
    if a.table:
        print(render(R.load_results(a.table)))
        return 0

    cases = list(CASES) if a.cases == "all" else [c.strip() for c in a.cases.split(",") if c.strip()]
    settings = [s.strip() for s in a.settings.split(",") if s.strip()]
    for name, known, what in ((cases, CASES, "case"), (settings, R.SETTINGS, "setting")):
        bad = [n for n in name if n not in known]
        if bad:
            ap.error(f"unknown {what}(s) {', '.join(bad)}; choose from {', '.join(known)}")
    draws = list(range(a.draws))

    # Which (case, setting) pairs exist: class variants skip cases they do not apply to.
    pairs = [(c, s) for s in settings for c in cases if R.load_case(c, R.variant_of(s)) is not None] \
        if any(R.variant_of(s) for s in settings) else [(c, s) for s in settings for c in cases]
    done = {R._key(r) for r in R.load_results(a.out) if not r.get("error")} if not a.rerun else set()

    def eff(s):
        return float(R.SETTINGS[s][1] or a.seconds)

    todo = [] if a.forest_only else [
        # draw-major: an interrupted run still covers every case
        (c, s, d, False) for d in draws for c, s in pairs if (c, s, eff(s), d, "pixlab") not in done]
    if a.upper and not a.forest_only:
        todo += [(c, s, 0, True) for c, s in pairs if (c, s, eff(s), 0, "upper") not in done]
    est = sum(eff(s) + R.PER_RUN_OVERHEAD_S for _, s, _, _ in todo) + 15 * len(cases) * len(draws)
    print(f"quality bench: {len(cases)} cases x {len(settings)} settings x {len(draws)} draws; "
          f"{len(todo)} pixlab runs to do ({len(pairs) * len(draws) if not a.forest_only else 0} in all); "
          f"estimated {est / 60:.0f} min; results -> {a.out}", flush=True)

    results = []
    for variant in sorted({R.variant_of(s) for s in settings} | ({""} if not settings else set())):
        for c in cases:
            if R.load_case(c, variant) is None:
                continue
            for d in draws:
                rec = R.forest_run(c, variant, d)
                results.append(rec)
                print(f"  forest {c}{'/' + variant if variant else ''} draw {d}: "
                      + (rec.get("error") or f"{rec['score']:.3f} ({rec['wall_s']:.1f} s)"), flush=True)
            try:
                o = R.otsu_run(c, variant)
            except Exception as e:
                o = {"case": c, "setting": variant or "-", "seconds": None, "draw": 0, "kind": "otsu",
                     "error": f"{type(e).__name__}: {e}"}
            if o is not None:
                results.append(o)
    R.save_results(a.out, results)

    t_start = time.time()
    for i, (c, s, d, upper) in enumerate(todo):
        rec = R.isolated(c, s, a.seconds, d, upper)
        R.save_results(a.out, [rec])  # after every run: an interrupted benchmark keeps what it measured
        what = rec.get("error") or (f"{rec['score']:.3f}, {rec.get('steps')} steps, {rec.get('wall_s')} s"
                                    + (" DEGENERATE" if rec.get("degenerate") else "")
                                    + (f", {len(rec['warnings'])} warning(s)" if rec.get("warnings") else ""))
        print(f"  [{i + 1}/{len(todo)} {(time.time() - t_start) / 60:.0f} min] {'upper' if upper else 'pixlab'} "
              f"{c} {s} draw {d}: {what}", flush=True)

    wanted = {(c, s) for c, s in pairs}
    variants = {R.variant_of(s) or "-" for s in settings}
    shown = [r for r in R.load_results(a.out)
             if ((r["case"], r["setting"]) in wanted and r.get("seconds") in {eff(s) for s in settings})
             or (r["kind"] in ("forest", "otsu") and r["case"] in cases and r["setting"] in variants)]
    shown = [r for r in shown if r["kind"] in ("forest", "otsu") or r["draw"] in draws or r["kind"] == "upper"]
    print()
    print(render(shown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
