"""Recipe comparison at a fixed number of optimizer steps (load-independent), for tuning.

``python -m bench.quality`` calls pixlab as a user does, with ``time_limit_s``; on a shared or busy
machine the same 180 s gave 73 to 599 steps, so two recipes measured at different times cannot be
compared. This runs the cpu_quick recipe for exactly ``--steps`` optimizer steps, ``--jobs`` single-thread
runs in parallel (at the recipe's batch 4, 960 steps take ~110 s per run so; 480 of batch 8 as long; one
process with two threads on 2 idle cores makes ~700 steps of batch 4 in a 60 s limit), and prints pixlab minus
the random forest per case and draw.

    python bench/quality/steps.py --tag base --steps 960
    python bench/quality/steps.py --tag balanced --cases fluo_nuclei --set '{"stroke_balance": true}'

Run it from the tree whose pixlab you want to measure (the current directory goes first on the path).
"""
import argparse, json, os, subprocess, sys, time
from concurrent.futures import ThreadPoolExecutor

def one(spec):
    sys.path.insert(0, os.getcwd())
    import warnings
    from bench.quality.run import load_case, CASES, score, degenerate
    from bench.quality.strokes import draw_strokes
    import pixlab
    img, truth, classes = load_case(spec['case'], spec.get('variant', ''), 0)
    labels = draw_strokes(CASES[spec['case']], truth, spec['draw'])
    ov = dict(recipe='cpu_quick', patches_per_epoch=128, early_stopping=False)  # batch size: the recipe's
    ov.update(spec['set'])
    batch = ov.get('batch_size', 'auto')
    if batch == 'auto':  # the recipe's choice, as train() will resolve it
        batch = pixlab.TrainConfig(seed=spec['draw'], device='cpu', **ov).resolved().batch_size
    steps_per_epoch = ov['patches_per_epoch'] // batch
    ov.setdefault('epochs', max(1, spec['steps'] // steps_per_epoch))
    cfg = pixlab.TrainConfig(seed=spec['draw'], num_threads=spec.get('threads', 1), **ov)
    t0 = time.time()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        m = pixlab.train([(img, labels)], cfg, class_names=classes, progress=False)
    pred = m.predict_labels(img)
    s, ious = score(pred, truth, len(classes))
    qc = (getattr(m, 'metadata', None) or {}).get('quality_check', {})
    return dict(spec, score=s, ious=ious, degenerate=degenerate(pred, truth, len(classes)),
                steps=int(sum(h.get('steps', 0) for h in m.history)), wall=round(time.time() - t0, 1),
                qc=qc.get('status') if isinstance(qc, dict) else None)

def forest(case, draw, variant=''):
    sys.path.insert(0, os.getcwd())
    from bench.quality.run import forest_run
    return forest_run(case, variant, draw)['score']

if __name__ == '__main__':
    if sys.argv[1] == '--one':
        print('RESULT ' + json.dumps(one(json.loads(sys.argv[2]))), flush=True); sys.exit()
    ap = argparse.ArgumentParser()
    ap.add_argument('--tag', required=True)
    ap.add_argument('--cases', default='fluo_nuclei,he_3class,multiplex_if,texture,ihc,cells_inside')
    ap.add_argument('--draws', default='0,1,2')
    ap.add_argument('--steps', type=int, default=480)
    ap.add_argument('--set', default='{}')
    ap.add_argument('--env', default='{}')
    ap.add_argument('--jobs', type=int, default=2)
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--out', default='bench/out/quality_steps.jsonl')
    a = ap.parse_args()
    fpath = os.path.join(os.path.dirname(a.out) or '.', 'quality_steps_forest.json')
    os.makedirs(os.path.dirname(a.out) or '.', exist_ok=True)
    fo = json.load(open(fpath)) if os.path.exists(fpath) else {}
    specs = [dict(tag=a.tag, case=c, draw=int(d), steps=a.steps, set=json.loads(a.set), threads=a.threads)
             for c in a.cases.split(',') for d in a.draws.split(',')]
    for s in specs:
        k = f"{s['case']}/{s['draw']}"
        if k not in fo:
            fo[k] = forest(s['case'], s['draw']); json.dump(fo, open(fpath, 'w'))
    env = dict(os.environ, **json.loads(a.env))
    def run(s):
        p = subprocess.run([sys.executable, __file__, '--one', json.dumps(s)], capture_output=True, text=True, env=env)
        for line in p.stdout.splitlines():
            if line.startswith('RESULT '):
                r = json.loads(line[7:]); r['env'] = json.loads(a.env); r['forest'] = fo[f"{s['case']}/{s['draw']}"]
                with open(a.out, 'a') as f: f.write(json.dumps(r) + '\n')
                print(f"{r['case']:13s} d{r['draw']} {r['score']:.3f} forest {r['forest']:.3f} ({r['score']-r['forest']:+.3f}) steps {r['steps']} {r['wall']} s qc {r['qc']}", flush=True)
                return r
        print('ERROR', s, p.stderr[-1500:], flush=True)
    with ThreadPoolExecutor(a.jobs) as ex:
        rs = [r for r in ex.map(run, specs) if r]
    import collections
    by = collections.defaultdict(list)
    for r in rs: by[r['case']].append(r)
    print(f"== {a.tag} {a.set} {a.env}")
    for c, l in by.items():
        d = [r['score'] - r['forest'] for r in l]
        print(f"  {c:13s} mean {sum(r['score'] for r in l)/len(l):.3f} vs forest {sum(r['forest'] for r in l)/len(l):.3f}  mean diff {sum(d)/len(d):+.3f} worst {min(d):+.3f}")
    alld = [r['score'] - r['forest'] for r in rs]
    print(f"  ALL mean diff {sum(alld)/len(alld):+.3f} worst {min(alld):+.3f}")
