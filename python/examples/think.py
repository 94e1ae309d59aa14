"""Let a model think about each next byte of a prompt, print the energies,
then continue the prompt. Usage (after `make`; see README.md "Python"):

    python3 python/examples/think.py [checkpoint.safetensors] [prompt]

Without a checkpoint the model is untrained (random weights, arbitrary
guesses); ./build/ebt_lm train writes one (byte-level, V = 256).
"""
import os
import sys

import numpy as np

try:
    import ebt
except ImportError:          # not installed: use the checkout's python/ (which finds build/libebt.so.0)
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    import ebt

path = sys.argv[1] if len(sys.argv) > 1 else None
prompt = (sys.argv[2] if len(sys.argv) > 2 else "ROMEO: But soft").encode()
model = ebt.Model.load(path) if path else ebt.Model.create(seed=42)   # untrained: arbitrary guesses
tokens = np.frombuffer(prompt, dtype=np.uint8)     # bytes are the tokens (V = 256)

r = model.think(tokens, steps=4, restarts=2, seed=1)   # every position at once, 2 starts each
for i, byte in enumerate(prompt):
    guess = int(r.probs[i].argmax())
    print("after %-5r energy %+8.4f  E_0..E_4 %s  start %d  next %r (p = %.3f)" % (
        chr(byte), r.final_energy[i], np.round(r.energy[i], 2), r.winner[i], chr(guess), r.probs[i, guess]))

out = model.generate(tokens, 40, temperature=0.8, think=dict(steps=2),   # streaming, with energies
                     on_token=lambda t: print("token", t.index, repr(chr(t.token)), t.energy))
print("continued: %r" % (prompt + bytes(out.tokens.astype(np.uint8))).decode("utf-8", "replace"))
