#!/usr/bin/env python3
"""word_check.py SAMPLE [CORPUS...]: the share of the sample's words (runs of
3 or more letters, lower-cased) that occur in the corpus (default: the
fortunes in /usr/share/games/fortunes, ebt_lm's default corpus)."""
import glob, os, re, sys

def words(text):
    return re.findall(r'[a-z]{3,}', text.lower())

def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    paths = sys.argv[2:] or [p for p in sorted(glob.glob('/usr/share/games/fortunes/*'))
                             if os.path.isfile(p) and not p.endswith(('.dat', '.u8'))]
    vocab = set()
    for p in paths:
        vocab.update(words(open(p, encoding='utf-8', errors='replace').read()))
    w = words(open(sys.argv[1], encoding='utf-8', errors='replace').read())
    known = sum(x in vocab for x in w)
    print('%d of %d words (3+ letters) are words of the corpus: %.0f%%' % (known, len(w), 100.0 * known / max(len(w), 1)))

if __name__ == '__main__':
    main()
