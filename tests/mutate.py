#!/usr/bin/env python3
"""make mutate: put small deliberate bugs into a copy of ebt.c, one at a time,
and check that the tests meant to catch each one fail.

Each mutant in tests/mutants.txt names the exact text it replaces (which must
occur exactly once in ebt.c, so a stale mutant is an error, not a pass), its
replacement, and the test programs to run. The copy of the repository is
built with `make test`'s rules (BUILD=build-mutate, -O1, GEMM=$GEMM) in a
temporary directory. A mutant is caught when one of its tests fails; one
that does not compile counts as not caught (it proves nothing); the report lists each mutant with the test that caught it.
Exit status: 0 when every mutant is caught, 1 otherwise, 2 on a bad list.

    python3 tests/mutate.py [--jobs N] [--only ID,...] [--keep]
"""
import os, shutil, subprocess, sys, tempfile, time, concurrent.futures as cf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse(path):
    """mutants: dicts with id, what, search, replace, tests"""
    muts, cur, field = [], None, None
    for line in open(path, encoding='utf-8'):
        if line.startswith('#') and not field:
            continue
        if line.startswith('== '):
            cur = {'id': line[3:].strip(), 'what': '', 'search': '', 'replace': '', 'tests': []}
            muts.append(cur)
            field = None
        elif line.startswith('what: '):
            cur['what'] = line[6:].strip()
        elif line.startswith('tests: '):
            cur['tests'] = line[7:].split()
        elif line.strip() in ('--- search', '--- replace'):
            field = line.strip()[4:]
        elif line.strip() == '--- end':
            field = None
        elif field:
            cur[field] += line
    for m in muts:
        m['search'] = m['search'].rstrip('\n')
        m['replace'] = m['replace'].rstrip('\n')
        if not m['search'] or not m['tests']:
            sys.exit('mutate: mutant %s has no search text or no tests' % m['id'])
    return muts


def copy_tree(dst):
    files = subprocess.run(['git', 'ls-files'], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        if not os.path.exists(os.path.join(ROOT, f)):
            continue
        os.makedirs(os.path.join(dst, os.path.dirname(f)), exist_ok=True)
        shutil.copy2(os.path.join(ROOT, f), os.path.join(dst, f))


def run_mutant(m, src, gemm):
    """(id, caught_by or None, detail, seconds) for one mutant, in a fresh copy"""
    t0 = time.time()
    work = tempfile.mkdtemp(prefix='ebt-mutate-')
    try:
        copy_tree(work)
        path = os.path.join(work, 'ebt.c')
        text = open(path, encoding='utf-8').read()
        n = text.count(m['search'])
        if n != 1:
            return m['id'], None, 'search text found %d times (must be 1): stale mutant' % n, time.time() - t0
        open(path, 'w', encoding='utf-8').write(text.replace(m['search'], m['replace']))
        env = dict(os.environ, OPENBLAS_NUM_THREADS='1', OMP_NUM_THREADS='1')
        targets = ['build-mutate/' + t for t in m['tests']]
        b = subprocess.run(['make', '-s', 'BUILD=build-mutate', 'OPT=-O1', 'GEMM=' + gemm] + targets,
                           cwd=work, capture_output=True, text=True, env=env)
        if b.returncode != 0:   # a mutant must compile: a broken one proves nothing
            return m['id'], None, 'does not build: ' + (b.stderr.strip().splitlines() or ['?'])[-1], time.time() - t0
        for t in m['tests']:
            r = subprocess.run(['../build-mutate/' + t], cwd=os.path.join(work, 'tests'), capture_output=True,
                               text=True, env=env, timeout=600)
            if r.returncode != 0:
                fails = [l for l in r.stdout.splitlines() if 'FAILED  ]' in l or 'FAIL' in l]
                return m['id'], t, (fails[0].strip() if fails else 'exit %d' % r.returncode), time.time() - t0
        return m['id'], None, 'every test passed: the mutant SURVIVED', time.time() - t0
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main():
    args = sys.argv[1:]
    jobs = int(args[args.index('--jobs') + 1]) if '--jobs' in args else 2
    only = args[args.index('--only') + 1].split(',') if '--only' in args else None
    gemm = os.environ.get('GEMM', 'onednn')
    muts = parse(os.path.join(ROOT, 'tests', 'mutants.txt'))
    if only:
        muts = [m for m in muts if m['id'] in only]
    src = open(os.path.join(ROOT, 'ebt.c'), encoding='utf-8').read()
    bad = [m['id'] for m in muts if src.count(m['search']) != 1]
    if bad:
        print('mutate: stale mutants (search text not found exactly once in ebt.c): ' + ', '.join(bad))
        return 2
    print('mutate: %d mutants, %d at a time, GEMM=%s' % (len(muts), jobs, gemm), flush=True)
    t0, survived = time.time(), 0
    with cf.ThreadPoolExecutor(jobs) as ex:
        futs = {ex.submit(run_mutant, m, src, gemm): m for m in muts}
        for f in cf.as_completed(futs):
            mid, by, detail, secs = f.result()
            m = futs[f]
            survived += by is None
            print('  %-28s %-9s %-22s %5.0f s  %s' % (mid, 'caught' if by else 'SURVIVED', by or '-', secs, m['what']), flush=True)
            if not by:
                print('      ' + detail)
    print('mutate: %d of %d caught, %d survived (%.0f s)' % (len(muts) - survived, len(muts), survived, time.time() - t0))
    return 1 if survived else 0


if __name__ == '__main__':
    sys.exit(main())
